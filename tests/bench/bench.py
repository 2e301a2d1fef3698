#!/usr/bin/env python3
"""FireSharp side-by-side benchmarks P1-P3. Run through tests/bench/run-bench.sh (`make bench`).

P1  process start -> guest exit on hello.elf: FireSharp vs QEMU microvm. Wall and CPU (user+sys)
    time per process, median and p90, runs interleaved A,B,A,B after one unmeasured warm-up each.
P2  port-I/O exits per second on portio-loop.elf: FireSharp vs the C reference runner (and QEMU).
    Method: every runner is timed as a whole process with n=N and with n=0 (same guest, same
    image, same start-up and teardown, just no port 0x80 writes). The start-up baseline is the
    median n=0 wall time of that runner; each n=N run gives rate = N / (wall_N - baseline).
    All runs are interleaved (fs n=0, C n=0, QEMU n=0, fs n=N, C n=N, QEMU n=N, repeat) so that
    load from elsewhere hits every runner alike. The C runner also reports its own in-loop rate
    (first KVM_RUN to the end); it is printed next to the baseline-subtracted figure as a check
    of the method.
P3  peak RSS of the VMM process with a 128 MiB guest that runs counter.elf (it loops in ring 3
    forever, so the VMM sees no exits: idle from the VMM's point of view). The VMM runs under
    /usr/bin/time -f %M for BENCH_P3_HOLD seconds and is then stopped with SIGTERM.
    Guest-touched memory is read from /proc/PID/smaps just before the SIGTERM: the Rss of the
    anonymous mapping that holds guest RAM (the one whose size is the guest size). The VMM's own
    footprint is peak RSS minus that. FireSharp also runs with a 16 MiB guest as a cross-check
    that its RSS does not grow with guest size.

Every child has a timeout (pidfd + SIGKILL), stdin is /dev/null, output goes to files in the
work directory. The report exits 0 when targets are missed; it exits 1 when something fails to
run (wrong exit status, missing guest output, timeout).
"""
import argparse
import math
import os
import re
import select
import shutil
import signal
import statistics
import sys
import time

LIVE: set[int] = set()  # pids we spawned and have not reaped yet


class RunError(Exception):
    pass


def log(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------- process running

class Proc:
    def __init__(self, argv: list[str], workdir: str, tag: str):
        exe = shutil.which(argv[0])
        if exe is None:
            raise RunError(f"{argv[0]}: not found")
        self.argv = argv
        self.out = os.path.join(workdir, tag + ".out")
        self.err = os.path.join(workdir, tag + ".err")
        wr = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, self.out, wr, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, self.err, wr, 0o644),
        ]
        self.t0 = time.perf_counter()
        self.pid = os.posix_spawn(exe, argv, os.environ, file_actions=actions)
        LIVE.add(self.pid)
        self.pidfd = os.pidfd_open(self.pid)
        self.wall = self.cpu = 0.0
        self.maxrss_kib = 0
        self.rc: int | None = None
        self.timed_out = False

    def exited_within(self, seconds: float) -> bool:
        """True if the process ended within `seconds` (it is not reaped yet)."""
        ready, _, _ = select.select([self.pidfd], [], [], max(0.0, seconds))
        return bool(ready)

    def wait(self, timeout: float) -> "Proc":
        if not self.exited_within(timeout):
            self.timed_out = True
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        _, status, ru = os.wait4(self.pid, 0)
        t1 = time.perf_counter()
        LIVE.discard(self.pid)
        os.close(self.pidfd)
        self.wall = t1 - self.t0
        self.cpu = ru.ru_utime + ru.ru_stime
        self.maxrss_kib = ru.ru_maxrss
        self.rc = os.waitstatus_to_exitcode(status)
        return self

    def stdout(self) -> str:
        with open(self.out, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self) -> str:
        with open(self.err, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def check(self, what: str, expect_out: str, rcs: tuple[int, ...] = (0,)) -> "Proc":
        problem = None
        if self.timed_out:
            problem = "timed out (killed)"
        elif self.rc not in rcs:
            problem = f"exit status {self.rc}, expected {' or '.join(map(str, rcs))}"
        elif expect_out not in self.stdout():
            problem = f"guest output lacks {expect_out!r}"
        if problem:
            tail = lambda s: "\n".join("    | " + l for l in s.strip().splitlines()[-8:])
            raise RunError(f"{what}: {problem}\n  command: {' '.join(self.argv)}\n"
                           f"  stdout:\n{tail(self.stdout())}\n  stderr:\n{tail(self.stderr())}")
        return self


def kill_leftovers() -> None:
    for pid in list(LIVE):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        LIVE.discard(pid)


# ---------------------------------------------------------------------------- statistics, format

def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def verdict(ratio: float, target: float, le: bool) -> str:
    return "PASS" if (ratio <= target if le else ratio >= target) else "MISS"


def rate_str(r: float) -> str:
    return f"{r / 1000:.1f}k/s"


# ---------------------------------------------------------------------------- the benchmarks

class Bench:
    def __init__(self, a):
        self.a = a
        self.fs = a.firesharp
        self.runner = a.runner
        self.g = lambda name: os.path.join(a.guests, name + ".elf")
        self.qemu_base = [a.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
                          "-m", "128", "-nographic", "-no-reboot"]
        self.seq = 0
        self.rows: list[tuple] = []      # table rows
        self.summary: list[str] = []
        self.details: list[str] = []

    def run(self, tag: str, argv: list[str], timeout: float) -> Proc:
        self.seq += 1
        return Proc(argv, self.a.work, f"{self.seq:03d}-{tag}").wait(timeout)

    # P1 -------------------------------------------------------------------------------------
    def p1(self) -> None:
        n = self.a.p1_runs
        hello = self.g("hello")
        fs_cmd = [self.fs, "run", "--kernel", hello]
        q_cmd = self.qemu_base + ["-kernel", hello]
        want = "Hello from FireSharp tiny guest"
        log(f"P1: hello.elf start->exit, {n} interleaved runs each (+1 warm-up each) ...")
        self.run("p1-fs-warm", fs_cmd, 30).check("P1 FireSharp warm-up", want)
        self.run("p1-q-warm", q_cmd, 30).check("P1 QEMU warm-up", want)
        fs, q = [], []
        for i in range(n):
            fs.append(self.run("p1-fs", fs_cmd, 30).check(f"P1 FireSharp run {i + 1}", want))
            q.append(self.run("p1-q", q_cmd, 30).check(f"P1 QEMU run {i + 1}", want))
        ms = lambda ps, attr: [getattr(p, attr) * 1000 for p in ps]
        for attr, name in (("wall", "wall"), ("cpu", "CPU (user+sys)")):
            f, g = ms(fs, attr), ms(q, attr)
            for stat, fn in (("median", med), ("p90", lambda x: pct(x, 90))):
                fv, qv = fn(f), fn(g)
                target = "<= 0.5x" if stat == "median" else ""
                v = verdict(fv / qv, 0.5, True) if stat == "median" else ""
                self.rows.append((f"P1 {name} {stat}", f"{fv:.1f} ms", "QEMU microvm", f"{qv:.1f} ms",
                                  f"{fv / qv:.2f}x", target, v))
            self.details.append(f"P1 {name} ms, FireSharp: " + " ".join(f"{x:.1f}" for x in f))
            self.details.append(f"P1 {name} ms, QEMU:      " + " ".join(f"{x:.1f}" for x in g))
            fv, qv = med(f), med(g)
            self.summary.append(f"P1 {attr.replace('cpu', 'CPU')}: FireSharp {fv:.1f} ms vs QEMU {qv:.1f} ms = {fv / qv:.2f}x "
                                f"(median of {n}; target <= 0.5x) {verdict(fv / qv, 0.5, True)}")

    # P2 -------------------------------------------------------------------------------------
    def p2(self) -> None:
        n_runs, N = self.a.p2_runs, self.a.p2_n
        pl = self.g("portio-loop")
        cmds = {
            "fs": lambda n: [self.fs, "run", "--kernel", pl, "--cmdline", f"n={n}"],
            "c": lambda n: [self.runner, pl, f"n={n}"],
        }
        if self.a.p2_qemu:
            cmds["q"] = lambda n: self.qemu_base + ["-kernel", pl, "-append", f"n={n}"]
        names = {"fs": "FireSharp", "c": "C runner", "q": "QEMU"}
        log(f"P2: portio-loop.elf n={N} and n=0, {n_runs} interleaved rounds of {', '.join(names[k] for k in cmds)} ...")
        for k, mk in cmds.items():  # warm-up
            self.run(f"p2-{k}-warm", mk(0), 30).check(f"P2 {names[k]} warm-up", "DONE")
        base = {k: [] for k in cmds}
        load = {k: [] for k in cmds}
        inloop = []
        for i in range(n_runs):
            for k, mk in cmds.items():
                base[k].append(self.run(f"p2-{k}-0", mk(0), 30).check(f"P2 {names[k]} n=0 run {i + 1}", "DONE"))
            for k, mk in cmds.items():
                p = self.run(f"p2-{k}-{N}", mk(N), 120).check(f"P2 {names[k]} n={N} run {i + 1}", "DONE")
                load[k].append(p)
                if k == "c":
                    m = re.search(r"exits=(\d+) seconds=\S+ exits_per_sec=(\d+)", p.stderr())
                    if not m or int(m.group(1)) != N + 11:
                        raise RunError(f"P2 C runner: unexpected result line: {p.stderr().strip()[:200]}")
                    inloop.append(float(m.group(2)))
            log(f"  round {i + 1}/{n_runs}: " + ", ".join(
                f"{names[k]} {load[k][-1].wall:.2f} s" for k in cmds))
        rates = {}
        for k in cmds:
            b = med([p.wall for p in base[k]])
            rs = []
            for p in load[k]:
                dt = p.wall - b
                if dt <= 0:
                    raise RunError(f"P2 {names[k]}: n={N} run took {p.wall:.3f} s, not longer than its n=0 baseline {b:.3f} s")
                rs.append(N / dt)
            rates[k] = rs
            self.details.append(f"P2 {names[k]}: n=0 wall ms " + " ".join(f"{p.wall * 1000:.1f}" for p in base[k])
                                + f" (median {b * 1000:.1f}); n={N} wall s " + " ".join(f"{p.wall:.3f}" for p in load[k])
                                + "; exits/s " + " ".join(f"{r:.0f}" for r in rs))
        self.details.append("P2 C runner in-loop rate (its own clock, first KVM_RUN to end): "
                            + " ".join(f"{r:.0f}" for r in inloop) + f" (median {med(inloop):.0f}/s)")
        fr, cr = med(rates["fs"]), med(rates["c"])
        self.rows.append(("P2 port-I/O exits/s median", rate_str(fr), "C portio-runner", rate_str(cr),
                          f"{fr / cr:.2f}x", ">= 0.9x", verdict(fr / cr, 0.9, False)))
        self.rows.append(("P2  (C runner in-loop check)", "", "C, own clock", rate_str(med(inloop)),
                          "", "", ""))
        self.summary.append(f"P2 exits/s: FireSharp {rate_str(fr)} vs C runner {rate_str(cr)} = {fr / cr:.2f}x "
                            f"(median of {n_runs}, n={N}, n=0 baseline subtracted; target >= 0.9x) "
                            f"{verdict(fr / cr, 0.9, False)}")
        if "q" in cmds:
            qr = med(rates["q"])
            self.rows.append(("P2 port-I/O exits/s median", rate_str(fr), "QEMU microvm", rate_str(qr),
                              f"{fr / qr:.2f}x", "(info)", ""))
            self.summary.append(f"P2 exits/s (info): FireSharp {rate_str(fr)} vs QEMU {rate_str(qr)} = {fr / qr:.2f}x (no target)")

    # P3 -------------------------------------------------------------------------------------
    @staticmethod
    def child_of(ppid: int, deadline: float) -> int:
        while time.perf_counter() < deadline:
            try:
                with open(f"/proc/{ppid}/task/{ppid}/children") as f:
                    kids = f.read().split()
                if kids:
                    return int(kids[0])
            except FileNotFoundError:
                for d in os.listdir("/proc"):
                    if d.isdigit():
                        try:
                            with open(f"/proc/{d}/stat") as f:
                                if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                                    return int(d)
                        except (OSError, IndexError, ValueError):
                            pass
            time.sleep(0.005)
        raise RunError(f"P3: the time wrapper (pid {ppid}) started no child")

    @staticmethod
    def sample(pid: int, mem_mib: int) -> dict:
        s = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    s[k] = int(v.split()[0])
        # guest RAM: the anonymous rw mapping whose size is the guest size (glibc may have merged
        # a small malloc arena onto its end, so allow a few MiB more; its Rss is an upper bound)
        want = mem_mib * 1024
        best = None
        cur = None
        hdr = re.compile(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$")
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                m = hdr.match(line)
                if m:
                    cur = {"perms": m.group(1), "path": m.group(2).strip()}
                elif cur is not None and line.startswith("Size:"):
                    cur["size"] = int(line.split()[1])
                elif cur is not None and line.startswith("Rss:"):
                    cur["rss"] = int(line.split()[1])
                    if cur["perms"].startswith("rw") and not cur["path"] and want <= cur["size"] <= want + 4096:
                        if best is None or cur["size"] < best["size"]:
                            best = cur
        s["guest_rss"] = best["rss"] if best else None
        return s

    def p3_one(self, name: str, argv: list[str], mem_mib: int) -> dict:
        hold = self.a.p3_hold
        self.seq += 1
        tag = f"{self.seq:03d}-p3"
        tfile = os.path.join(self.a.work, tag + ".time")
        use_time = os.access(self.a.time_bin, os.X_OK)
        # GNU time is a small C parent, so its %M (the child's ru_maxrss) is the VMM's peak RSS.
        # Without it, do not use wait4() from here: an exec'd child's ru_maxrss includes the RSS of
        # the image it replaced (Python's, ~16 MiB). Read the VMM's VmHWM just before SIGTERM instead.
        full = ([self.a.time_bin, "-f", "%M", "-o", tfile] if use_time else []) + argv
        p = Proc(full, self.a.work, tag)
        vmm = self.child_of(p.pid, p.t0 + 5) if use_time else p.pid
        if p.exited_within(hold - 0.25):
            p.wait(1)
            raise RunError(f"P3 {name}: the VMM ended after {p.wall:.2f} s (status {p.rc}) instead of running "
                           f"until SIGTERM\n  command: {' '.join(full)}\n  stderr: {p.stderr().strip()[-400:]}")
        s = self.sample(vmm, mem_mib)
        p.exited_within(max(0.0, p.t0 + hold - time.perf_counter()))
        hwm = self.sample(vmm, mem_mib).get("VmHWM", 0) if not use_time else 0
        try:
            os.kill(vmm, signal.SIGTERM)
        except ProcessLookupError:
            pass
        p.wait(15).check(f"P3 {name} (stopped with SIGTERM)", "COUNTING")
        if use_time:
            with open(tfile) as f:
                peak = int(f.read().strip().splitlines()[-1])
        else:
            peak = hwm
        s["peak"] = peak
        s["cpu"] = p.cpu
        g = s["guest_rss"]
        self.details.append(
            f"P3 {name}: peak RSS {peak} KiB; at {hold - 0.25:.2f} s VmRSS {s.get('VmRSS')} KiB "
            f"(anon {s.get('RssAnon')}, file {s.get('RssFile')}, shmem {s.get('RssShmem')}), "
            f"guest RAM mapping Rss {g if g is not None else 'not found'} KiB; CPU {p.cpu:.2f} s")
        return s

    def p3(self) -> None:
        hold = self.a.p3_hold
        use_time = os.access(self.a.time_bin, os.X_OK)
        how = f"under {self.a.time_bin} -f %M" if use_time else f"peak = VmHWM just before SIGTERM ({self.a.time_bin} missing)"
        log(f"P3: counter.elf (idle VMM), {hold:g} s each, then SIGTERM; {how} ...")
        counter = self.g("counter")
        fs = self.p3_one("FireSharp 128 MiB", [self.fs, "run", "--kernel", counter, "--mem-mib", "128"], 128)
        q = self.p3_one("QEMU 128 MiB", self.qemu_base + ["-kernel", counter], 128)
        fs16 = self.p3_one("FireSharp 16 MiB", [self.fs, "run", "--kernel", counter, "--mem-mib", "16"], 16)
        mib = lambda k: k / 1024
        fp, qp = mib(fs["peak"]), mib(q["peak"])
        self.rows.append(("P3 peak RSS, 128 MiB idle guest", f"{fp:.1f} MiB", "QEMU microvm", f"{qp:.1f} MiB",
                          f"{fp / qp:.2f}x", "<= 0.5x", verdict(fp / qp, 0.5, True)))
        gstr = lambda s: f"{mib(s['guest_rss']):.2f} MiB" if s["guest_rss"] is not None else "n/a"
        self.rows.append(("P3  of which guest RAM touched", gstr(fs), "QEMU microvm", gstr(q), "", "", ""))
        over = lambda s: mib(s["peak"] - (s["guest_rss"] or 0))
        fo, qo = over(fs), over(q)
        self.rows.append(("P3 RSS minus guest-touched", f"{fo:.1f} MiB", "QEMU microvm", f"{qo:.1f} MiB",
                          f"{fo / qo:.2f}x", "FS <= 5 MiB", "PASS" if fo <= 5 else "MISS"))
        self.rows.append(("P3  FireSharp, 16 MiB guest", f"{mib(fs16['peak']):.1f} MiB", "FS 128 MiB",
                          f"{fp:.1f} MiB", f"{fs16['peak'] / fs['peak']:.2f}x", "", ""))
        self.summary.append(f"P3 peak RSS: FireSharp {fp:.1f} MiB vs QEMU {qp:.1f} MiB = {fp / qp:.2f}x "
                            f"(128 MiB idle guest; target <= 0.5x) {verdict(fp / qp, 0.5, True)}")
        gtxt = f"guest-touched {gstr(fs)}" if fs["guest_rss"] is not None else "guest mapping not found, nothing subtracted"
        self.summary.append(f"P3 moonshot: FireSharp RSS minus guest-touched = {fo:.1f} MiB ({gtxt}; "
                            f"16 MiB guest: {mib(fs16['peak']):.1f} MiB peak; target <= 5 MiB) "
                            f"{'PASS' if fo <= 5 else 'MISS'}")

    # report ---------------------------------------------------------------------------------
    def report(self) -> None:
        hdr = ("figure", "FireSharp", "peer", "peer value", "ratio", "target", "")
        rows = [hdr] + self.rows
        w = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
        line = lambda r: "  ".join(c.ljust(w[i]) if i in (0, 2, 5) else c.rjust(w[i]) for i, c in enumerate(r)).rstrip()
        log()
        log(line(hdr))
        log("-" * len(line(hdr)))
        for r in self.rows:
            log(line(r))
        log()
        log("Raw figures:")
        for d in self.details:
            log("  " + d)
        log()
        log("Summary" + (" (PVM host: software virtualization, not hardware KVM)" if os.path.isdir("/sys/module/kvm_pvm") else "") + ":")
        for s in self.summary:
            log(s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--firesharp", required=True)
    ap.add_argument("--runner", required=True)
    ap.add_argument("--guests", required=True)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--p1-runs", type=int, default=12)
    ap.add_argument("--p2-runs", type=int, default=5)
    ap.add_argument("--p2-n", type=int, default=100000)
    ap.add_argument("--p2-qemu", type=int, default=1)
    ap.add_argument("--p3-hold", type=float, default=2.0)
    ap.add_argument("--only", default="p1,p2,p3")
    ap.add_argument("--time-bin", default="/usr/bin/time")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    b = Bench(a)
    try:
        for part in a.only.split(","):
            getattr(b, part.strip())()
    except RunError as e:
        log(f"\nbench: FAILED: {e}")
        return 1
    finally:
        kill_leftovers()
    b.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
