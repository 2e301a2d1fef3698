#!/usr/bin/env python3
"""FireSharp side-by-side benchmarks P1-P6 and P9. Run through tests/bench/run-bench.sh (`make bench`).

P1  process start -> guest exit on hello.elf: FireSharp vs QEMU microvm. Wall and CPU (user+sys)
    time per process, median and p90, runs interleaved A,B,A,B after one unmeasured warm-up each.
    Jail on and off (BENCH_JAIL=1, the default, as root): the same guest run in a firesharp-vmm worker through
    a private daemon core, as `firesharp serve` runs every VM: `firesharp run --worker` (jail off) and
    `firesharp run --jail` (own uid, namespaces, pivot_root, no capabilities, its cgroup), interleaved. The
    jail's cost per VM start is the difference of their median walls (same path, only the jail differs).
P2  port-I/O exits per second on portio-loop.elf: FireSharp vs the C reference runner (and QEMU).
    Method: every runner is timed as a whole process with n=N and with n=0 (same guest, same
    image, same start-up and teardown, just no port 0x80 writes). The start-up baseline is the
    median n=0 wall time of that runner; each n=N run gives rate = N / (wall_N - baseline).
    All runs are interleaved (fs n=0, C n=0, QEMU n=0, fs n=N, C n=N, QEMU n=N, repeat) so that
    load from elsewhere hits every runner alike. The C runner also reports its own in-loop rate
    (first KVM_RUN to the end); it is printed next to the baseline-subtracted figure as a check
    of the method.
P3  peak RSS of the per-VM process with a 128 MiB guest that runs counter.elf (it loops in ring 3
    forever, so the VMM sees no exits: idle from the VMM's point of view), beside QEMU microvm.
    The headline is the worker, build/firesharp-vmm: the process the daemon starts for each VM. The
    bench starts it with --socket and gives it the machine through the worker protocol (CreateMachine,
    then start, as the daemon does; tests/bench/workerwire.py), waits for COUNTING on its console,
    samples PSS from smaps_rollup, and stops it with SIGTERM after BENCH_P3_HOLD seconds. Each VMM
    (worker, QEMU, `firesharp run`) runs under /usr/bin/time -f %M, so peak RSS includes the shutdown.
    For `firesharp run` and QEMU, guest-touched memory is read from /proc/PID/smaps just before the
    SIGTERM: the Rss of the anonymous mapping that holds guest RAM (the one whose size is the guest
    size); their own footprint is peak RSS minus that. `firesharp run` also runs with a 16 MiB guest
    as a cross-check that its RSS does not grow with guest size. The details print
    tests/bench/worker-size.results: what each NativeAOT setting of the worker saves, as measured by
    `make bench-worker-size` (tests/bench/worker-size.sh).
P4  restore -> guest running: counter.elf with 128 MiB is snapshotted once (`firesharp run
    --snapshot-after-ms 100 --snapshot-dir D --snapshot-exit`), then restored BENCH_P4_RUNS times,
    each in a new `firesharp run --restore D --exit-after-ms 20` process. The figure is the
    restoring process's own measure, from the restore call (state file read and checked) to the
    vCPU thread's first KVM_RUN, read from its log; the log also gives that moment on
    CLOCK_MONOTONIC, so the time from the bench's spawn to the guest running is reported too.
    With BENCH_JAIL=1 also `firesharp run --worker/--jail --restore D --exit-after-ms 20`: the restore
    then goes through a worker (jailed or not); the figure is spawn -> VM running (the restore call
    returned RUNNING), from the CLOCK_MONOTONIC moment the command logs.
P5  restores per second: BENCH_P5_COUNT such processes (`--exit-after-ms 1`), BENCH_P5_PARALLEL
    in flight at a time, on all cores of the machine; rate = count / total wall time. With BENCH_JAIL=1
    the same with `--worker` and `--jail` (each process a private daemon core, a worker, and its jail).
    As root also as a platform restores: BENCH_P5_COUNT RestoreVm calls, BENCH_P5_PARALLEL in flight,
    through one long-running `firesharp serve` (idle.elf, 128 MiB; P9's machinery), jail on vs --Jail=false.
P6  virtio-blk throughput (MiB/s) with virtio-blk-bench.elf, a ring-3 virtio-mmio (version 2)
    driver that polls its queue (req=256 KiB, 32 requests in flight, refilled in batches of 8),
    so on PVM hosts the driver runs natively and only its MMIO accesses exit. FireSharp
    (--drive) vs QEMU microvm (-device virtio-blk-device, modern transport, cache=writeback,
    aio=threads), same guest, same command line, same 256 MiB raw images in the work directory.
    Both VMMs go through the host page cache, which is warm: the bench writes and fsyncs the
    images, and the warm-up runs read them. read: the image holds the sector pattern (sector s
    starts with u64 s) and the guest checks three sectors of every request. write: the guest
    writes the pattern over an image filled with 0xAA, with flush=0 (no FLUSH at the end, so
    the host disk's speed stays out of the figure; FLUSH is still negotiated, so QEMU keeps its
    write-back cache); the bench then compares the image with the pattern, refills it and
    fsyncs it. A request passing the end of the image wraps to sector 0, so a run moves a
    multiple of the image size. Method as in P2: rate = MiB / (wall - median wall of that VMM's
    mib=0 run), which includes every cost the VMM adds. The transfer size per mode is the same
    for both VMMs, chosen from the warm-up runs so that the slower VMM takes about
    BENCH_P6_SECONDS (at least 2 passes over the image). A second figure uses the guest's own clock:
    the rdtsc ticks from its first submission to its last completion, at the host TSC rate
    measured here (rdtsc from Python through a 10-byte code page, against perf_counter).
    FireSharp runs a third time with a rate limiter far above the device's speed (--drive
    IMG:bps=64G:iops=1M, issue 12): both buckets are consulted on every request but never run dry,
    so the ratio to FireSharp without a limiter is the limiter's cost (target: within 5%).
    When `firesharp run --help` has no --drive option, P6 reports FireSharp as not available
    and still measures QEMU. A FireSharp failure in P6 is reported without losing the report.
P9  density: see tests/bench/density.py (its docstring). N idle 128 MiB clones of one snapshot restored
    through the daemon (BENCH_P9_COUNTS, BENCH_P9_PARALLEL in flight): per-VM PSS of the workers, restore
    rate, the daemon's memory, and the limit hit if a restore fails. A P9 failure is reported without
    losing the report.

Every child has a timeout (pidfd + SIGKILL), stdin is /dev/null, output goes to files in the
work directory. The report exits 0 when targets are missed; it exits 1 when something fails to
run (wrong exit status, missing guest output, timeout).
"""
import argparse
import array
import ctypes
import math
import mmap
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import density  # noqa: E402
import workermem  # noqa: E402

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


def host_tsc_hz() -> float | None:
    """The TSC rate, measured: rdtsc (through a tiny executable page) against perf_counter.
    None when that is not possible (not x86-64, or executable mappings are forbidden)."""
    if os.uname().machine != "x86_64":
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return None
    # rdtsc; shl rdx, 32; or rax, rdx; ret
    page.write(bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3]))
    rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    rates = []
    for _ in range(3):
        t0, c0 = time.perf_counter(), rdtsc()
        time.sleep(0.05)
        t1, c1 = time.perf_counter(), rdtsc()
        rates.append((c1 - c0) / (t1 - t0))
    return med(rates)


def fs_type(path: str) -> str:
    best, kind = "", "unknown"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, f"{parts[2]} on {parts[0]}"
    return kind


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
        self.failures: list[str] = []    # failures that did not stop the run (P6 FireSharp side)

    def run(self, tag: str, argv: list[str], timeout: float) -> Proc:
        self.seq += 1
        return Proc(argv, self.a.work, f"{self.seq:03d}-{tag}").wait(timeout)

    def jail_variants(self) -> list[tuple[str, list[str]]]:
        """The worker-path variants of `firesharp run` (jail off, jail on), when BENCH_JAIL=1 and we are root."""
        if not self.a.jail:
            return []
        if os.geteuid() != 0:
            self.details.append("jail variants not measured: the jail needs root")
            return []
        return [("worker, jail off", ["--worker"]), ("worker, jail on", ["--jail"])]

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
        self.p1_jail(fs_cmd, want, n)

    def p1_jail(self, fs_cmd: list[str], want: str, n: int) -> None:
        variants = self.jail_variants()
        if not variants:
            return
        log(f"P1: hello.elf through a worker, jail off and on, {n} interleaved runs each (+1 warm-up each) ...")
        runs: dict[str, list[Proc]] = {name: [] for name, _ in variants}
        for name, extra in variants:
            self.run("p1-jail-warm", fs_cmd + extra, 60).check(f"P1 {name} warm-up", want)
        for i in range(n):
            for name, extra in variants:
                runs[name].append(self.run("p1-jail", fs_cmd + extra, 60).check(f"P1 {name} run {i + 1}", want))
        off, on = (runs[name] for name, _ in variants)
        for attr, label in (("wall", "wall"), ("cpu", "CPU (user+sys)")):
            fo, fn_ = [getattr(p, attr) * 1000 for p in off], [getattr(p, attr) * 1000 for p in on]
            self.rows.append((f"P1 {label} median, worker, jail on", f"{med(fn_):.1f} ms", "jail off", f"{med(fo):.1f} ms",
                              f"{med(fn_) / med(fo):.2f}x", "(info)", ""))
            self.details.append(f"P1 {label} ms, worker jail off: " + " ".join(f"{x:.1f}" for x in fo))
            self.details.append(f"P1 {label} ms, worker jail on:  " + " ".join(f"{x:.1f}" for x in fn_))
        cost = med([p.wall * 1000 for p in on]) - med([p.wall * 1000 for p in off])
        self.rows.append(("P1  jail cost per VM start (wall, on - off)", f"{cost:.1f} ms", "", "", "", "(info)", ""))
        self.summary.append(f"P1 through a worker (`firesharp run --worker` / `--jail`, a private daemon core as `serve`): "
                            f"median wall jail off {med([p.wall * 1000 for p in off]):.1f} ms, jail on "
                            f"{med([p.wall * 1000 for p in on]):.1f} ms: the jail costs {cost:.1f} ms per VM start (median of {n})")

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
        try:
            vmm = workermem.child_of(p.pid, 5) if use_time else p.pid
        except RuntimeError as e:
            raise RunError(f"P3 {name}: {e}") from e
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

    def p3_worker(self, mem_mib: int) -> dict:
        """The per-VM process of production: firesharp-vmm, given a 128 MiB counter.elf machine through the
        worker protocol (create + start, as the daemon does), under GNU time like the others."""
        self.seq += 1
        use_time = os.access(self.a.time_bin, os.X_OK)
        s = workermem.measure_worker(self.a.worker, self.g("counter"), "COUNTING", mem_mib, self.a.work, f"{self.seq:03d}-p3-worker",
                                     hold=self.a.p3_hold, time_bin=self.a.time_bin if use_time else None,
                                     sample=lambda pid: {"guest_rss": self.sample(pid, mem_mib)["guest_rss"]})
        g = s["guest_rss"]
        self.details.append(
            f"P3 worker {mem_mib} MiB: peak RSS {s['peak']} KiB; while idle VmRSS {s['VmRSS']} KiB (anon {s['RssAnon']}, file "
            f"{s['RssFile']}), PSS {s['Pss']} KiB (anon {s['Pss_Anon']}, file {s['Pss_File']}), guest RAM mapping Rss "
            f"{g if g is not None else 'not found'} KiB, {s['Threads']} threads; socket to guest running {s['ready_s'] * 1000:.0f} ms")
        return s

    def p3(self) -> None:
        hold = self.a.p3_hold
        use_time = os.access(self.a.time_bin, os.X_OK)
        how = f"under {self.a.time_bin} -f %M" if use_time else f"peak = VmHWM just before SIGTERM ({self.a.time_bin} missing)"
        log(f"P3: counter.elf (idle VMM), {hold:g} s each, then SIGTERM; {how} ...")
        counter = self.g("counter")
        try:
            w = self.p3_worker(128)
        except RuntimeError as e:
            raise RunError(f"P3 worker: {e}") from e
        q = self.p3_one("QEMU 128 MiB", self.qemu_base + ["-kernel", counter], 128)
        fs = self.p3_one("FireSharp 128 MiB", [self.fs, "run", "--kernel", counter, "--mem-mib", "128"], 128)
        fs16 = self.p3_one("FireSharp 16 MiB", [self.fs, "run", "--kernel", counter, "--mem-mib", "16"], 16)
        mib = lambda k: k / 1024
        wp, fp, qp = mib(w["peak"]), mib(fs["peak"]), mib(q["peak"])
        ok = wp <= 10 and wp / qp <= 0.5
        self.rows.append(("P3 peak RSS, worker (firesharp-vmm), 128 MiB", f"{wp:.1f} MiB", "QEMU microvm", f"{qp:.1f} MiB",
                          f"{wp / qp:.2f}x", "<= 10 MiB, <= 0.5x", "PASS" if ok else "MISS"))
        gstr = lambda s: f"{mib(s['guest_rss']):.2f} MiB" if s["guest_rss"] is not None else "n/a"
        self.rows.append(("P3  of which guest RAM touched", gstr(w), "QEMU microvm", gstr(q), "", "", ""))
        over = lambda s: mib(s["peak"] - (s["guest_rss"] or 0))
        wo, qo = over(w), over(q)
        self.rows.append(("P3  worker RSS minus guest-touched", f"{wo:.1f} MiB", "QEMU microvm", f"{qo:.1f} MiB",
                          f"{wo / qo:.2f}x", "<= 5 MiB (next)", "PASS" if wo <= 5 else "MISS"))
        self.rows.append(("P3  worker PSS while idle, alone", f"{mib(w['Pss']):.1f} MiB", "", "", "", "(info; P9: shared)", ""))
        self.rows.append(("P3 peak RSS, firesharp run (CLI + VMM)", f"{fp:.1f} MiB", "QEMU microvm", f"{qp:.1f} MiB",
                          f"{fp / qp:.2f}x", "(info)", ""))
        self.rows.append(("P3  firesharp run, 16 MiB guest", f"{mib(fs16['peak']):.1f} MiB", "run 128 MiB",
                          f"{fp:.1f} MiB", f"{fs16['peak'] / fs['peak']:.2f}x", "", ""))
        self.summary.append(f"P3 peak RSS of the per-VM worker (build/firesharp-vmm, the process the daemon runs per VM): "
                            f"{wp:.1f} MiB vs QEMU {qp:.1f} MiB = {wp / qp:.2f}x (128 MiB idle guest; goal <= 10 MiB now and never "
                            f"above 0.5x QEMU) {'PASS' if ok else 'MISS'}; PSS alone {mib(w['Pss']):.1f} MiB")
        gtxt = f"guest-touched {gstr(w)}" if w["guest_rss"] is not None else "guest mapping not found, nothing subtracted"
        self.summary.append(f"P3 next step: worker peak RSS minus guest-touched = {wo:.1f} MiB ({gtxt}; goal <= 5 MiB) "
                            f"{'PASS' if wo <= 5 else 'MISS'}")
        self.summary.append(f"P3 peak RSS of `firesharp run` (the CLI binary hosting a VM in the foreground): {fp:.1f} MiB = "
                            f"{fp / qp:.2f}x QEMU; {mib(fs16['peak']):.1f} MiB with a 16 MiB guest (info)")
        self.p3_settings()

    def p3_settings(self) -> None:
        """The committed results of `make bench-worker-size`: what each NativeAOT setting of the worker saves."""
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker-size.results")
        try:
            lines = open(path).read().rstrip().splitlines()
        except OSError:
            self.details.append(f"P3 worker size settings: {path} missing (make bench-worker-size)")
            return
        self.details.append("P3 worker NativeAOT settings, what each saves (tests/bench/worker-size.results, from make bench-worker-size):")
        self.details.extend("  " + l for l in lines)

    # P9 -------------------------------------------------------------------------------------
    def p9(self) -> None:
        counts = [int(x) for x in self.a.p9_counts.split(",") if x.strip()]
        log(f"P9: density, idle 128 MiB clones of one snapshot restored through the daemon, N = "
            f"{', '.join(map(str, counts))}, {self.a.p9_parallel} in flight ...")
        d = density.Density(self.fs, self.a.guests, self.a.work, counts, self.a.p9_parallel, self.a.p9_cpu_s,
                            self.a.p9_step_timeout, lambda m: log(m))
        try:
            d.run()
        except (density.DensityError, OSError, subprocess.SubprocessError, ValueError) as e:
            self.failures.append(f"P9: {e}")  # the report (and what P9 measured before) is still printed
        d.report(self.rows, self.details, self.summary)

    # P6 -------------------------------------------------------------------------------------
    P6_MAGIC = 0x31304B4C42565346  # "FSVBLK01", the guest's pattern (virtio-blk-bench.S)
    P6_GUEST_ARGS = "req=256 depth=32 batch=8"
    P6_MEM_MIB = 256                # the guest needs 16 MiB + depth*req = 24 MiB
    P6_LIMIT = "bps=64G:iops=1M"    # far above the device: consulted on every request, never throttles

    @staticmethod
    def p6_pattern_image(path: str, mib: int) -> None:
        """Sector s: u64 s, u64 P6_MAGIC, 496 zero bytes."""
        per_mib = 2048
        buf = bytearray(per_mib * 512)
        words = memoryview(buf).cast("Q")
        words[1::64] = array.array("Q", [Bench.P6_MAGIC]) * per_mib
        with open(path, "wb") as f:
            for c in range(mib):
                words[0::64] = array.array("Q", range(c * per_mib, (c + 1) * per_mib))
                f.write(buf)
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def p6_fill_image(path: str, mib: int, byte: int) -> None:
        """Overwrite in place (the pages stay cached) and fsync, so no run inherits dirty pages."""
        chunk = bytes([byte]) * (1 << 20)
        with open(path, "r+b" if os.path.exists(path) else "wb") as f:
            for _ in range(mib):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def p6_same(a: str, b: str) -> bool:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(8 << 20), fb.read(8 << 20)
                if x != y:
                    return False
                if not x:
                    return True

    def p6_fs_has_drive(self) -> bool:
        p = self.run("p6-fs-help", [self.fs, "run", "--help"], 30)
        return p.rc == 0 and "--drive" in p.stdout()

    def p6(self) -> None:
        t_start = time.perf_counter()
        rounds, secs, img_mib, budget = self.a.p6_rounds, self.a.p6_seconds, self.a.p6_img_mib, self.a.p6_budget
        elf = self.g("virtio-blk-bench")
        rimg = os.path.join(self.a.work, "vblk-read.img")
        wimg = os.path.join(self.a.work, "vblk-write.img")
        names = {"fs": "FireSharp", "fsl": "FireSharp+limiter", "q": "QEMU"}
        cmds = {
            "fs": lambda img, args: [self.fs, "run", "--kernel", elf, "--mem-mib", str(self.P6_MEM_MIB),
                                     "--cmdline", args, "--drive", img],
            "fsl": lambda img, args: [self.fs, "run", "--kernel", elf, "--mem-mib", str(self.P6_MEM_MIB),
                                      "--cmdline", args, "--drive", f"{img}:{self.P6_LIMIT}"],
            "q": lambda img, args: [self.a.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
                                    "-m", str(self.P6_MEM_MIB), "-nographic", "-no-reboot", "-kernel", elf,
                                    "-append", args, "-global", "virtio-mmio.force-legacy=false",
                                    "-drive", f"id=vblk,file={img},format=raw,if=none,cache=writeback,aio=threads",
                                    "-device", "virtio-blk-device,drive=vblk"],
        }
        fs_note = None
        if not self.p6_fs_has_drive():
            fs_note = "not available (no virtio-blk: `firesharp run --help` has no --drive)"
            del cmds["fs"], cmds["fsl"]
        log(f"P6: virtio-blk-bench.elf read/write MiB/s, {', '.join(names[k] for k in cmds)}"
            + (f"; FireSharp: {fs_note}" if fs_note else "") + " ...")
        self.p6_pattern_image(rimg, img_mib)
        self.p6_fill_image(wimg, img_mib, 0xAA)
        tsc_hz = host_tsc_hz()
        self.details.append(f"P6 images: {img_mib} MiB raw files in {self.a.work} ({fs_type(self.a.work)}), written and "
                            f"fsynced by the bench, page cache warm for both VMMs; guest args {self.P6_GUEST_ARGS}, "
                            f"{self.P6_MEM_MIB} MiB, writes with flush=0; host TSC {tsc_hz / 1e6:.1f} MHz (measured)" if tsc_hz else
                            f"P6 images: {img_mib} MiB raw files in {self.a.work} ({fs_type(self.a.work)}); host TSC rate unknown")

        done_re = re.compile(r"VBLK-DONE mode=(\w+) bytes=(\d+) reqs=(\d+) notifies=(\d+) tsc=(\d+)")

        def one(k: str, mode: str, mib: int, what: str) -> dict:
            img = wimg if mode == "write" else rimg
            args = f"mode={mode} mib={mib} {self.P6_GUEST_ARGS}" + (" flush=0" if mode == "write" else "")
            p = self.run(f"p6-{k}-{mode}-{mib}", cmds[k](img, args), 120).check(f"P6 {names[k]} {what}", "VBLK-DONE")
            out = p.stdout()
            m = done_re.search(out)
            bad = [l for l in out.splitlines() if l.startswith(("VBLK-ERROR", "VBLK-BADDATA"))]
            if bad or not m or m.group(1) != mode or int(m.group(2)) != mib << 20:
                raise RunError(f"P6 {names[k]} {what}: unexpected guest output: {(bad or [out.strip()[-200:]])[0]}")
            if mode == "write" and mib > 0:
                if not self.p6_same(wimg, rimg):
                    raise RunError(f"P6 {names[k]} {what}: the written image does not hold the guest's pattern")
                self.p6_fill_image(wimg, img_mib, 0xAA)
            return {"wall": p.wall, "tsc": int(m.group(5)), "notifies": int(m.group(4)), "reqs": int(m.group(3)), "mib": mib}

        failed: dict[str, str] = {}

        def guarded(k: str, fn):
            if k in failed:
                return None
            try:
                return fn()
            except RunError as e:
                if k not in ("fs", "fsl"):
                    raise
                failed[k] = str(e)
                self.failures.append(str(e))
                log(f"  FireSharp failed in P6: {str(e).splitlines()[0]}")
                return None

        # warm-up: baseline, then one image-sized pass per mode. Both VMMs then move the same amount
        # per run, sized so that the slower one takes about `secs` (at least 2 passes over the image).
        warm_rate: dict[tuple[str, str], float] = {}
        for k in cmds:
            def warm(k=k):
                b = one(k, "read", 0, "warm-up mib=0")["wall"]
                for mode in ("read", "write"):
                    r = one(k, mode, img_mib, f"warm-up {mode}")
                    t = r["tsc"] / tsc_hz if tsc_hz else r["wall"] - b
                    warm_rate[(k, mode)] = img_mib / t if t > 0 else 1e9  # MiB/s
            guarded(k, warm)
        mibs: dict[str, int] = {}
        for mode in ("read", "write"):
            rate = min(v for (k, m), v in warm_rate.items() if m == mode and k not in failed)
            mibs[mode] = max(2, min(self.a.p6_max_passes, round(rate * secs / img_mib))) * img_mib
        walls = {k: {"base": [], "read": [], "write": []} for k in cmds}
        runs_done = 0
        for i in range(rounds):
            if i > 0 and time.perf_counter() - t_start > budget:
                log(f"  P6 time budget ({budget:g} s) reached after {i} rounds")
                break
            for k in cmds:
                r = guarded(k, lambda k=k: one(k, "read", 0, f"mib=0 run {i + 1}"))
                if r:
                    walls[k]["base"].append(r)
            for mode in ("read", "write"):
                for k in cmds:
                    r = guarded(k, lambda k=k, mode=mode: one(k, mode, mibs[mode], f"{mode} run {i + 1}"))
                    if r:
                        walls[k][mode].append(r)
            runs_done += 1
            log(f"  round {i + 1}/{rounds}: " + ", ".join(
                f"{names[k]} " + " ".join(f"{mode} {walls[k][mode][-1]['mib']} MiB {walls[k][mode][-1]['wall']:.2f} s"
                                          for mode in ("read", "write") if walls[k][mode])
                for k in cmds if k not in failed))

        def rates(k: str, mode: str) -> tuple[list[float], list[float]]:
            b = med([r["wall"] for r in walls[k]["base"]])
            wall_r, tsc_r = [], []
            for r in walls[k][mode]:
                dt = r["wall"] - b
                if dt <= 0:
                    raise RunError(f"P6 {names[k]} {mode}: a {r['mib']} MiB run took {r['wall']:.3f} s, "
                                   f"not longer than its mib=0 baseline {b:.3f} s")
                wall_r.append(r["mib"] / dt)
                if tsc_hz:
                    tsc_r.append(r["mib"] / (r["tsc"] / tsc_hz))
            return wall_r, tsc_r

        ok = [k for k in cmds if k not in failed and walls[k]["read"] and walls[k]["write"]]
        res = {k: {mode: rates(k, mode) for mode in ("read", "write")} for k in ok}
        for k in ok:
            bw = [r["wall"] * 1000 for r in walls[k]["base"]]
            self.details.append(f"P6 {names[k]}: mib=0 wall ms " + " ".join(f"{x:.1f}" for x in bw) + f" (median {med(bw):.1f})")
            for mode in ("read", "write"):
                rs = walls[k][mode]
                wr, tr = res[k][mode]
                self.details.append(
                    f"P6 {names[k]} {mode}: {rs[0]['mib']} MiB/run, {rs[0]['reqs']} requests; wall s "
                    + " ".join(f"{r['wall']:.3f}" for r in rs) + "; MiB/s " + " ".join(f"{x:.0f}" for x in wr)
                    + ("; guest-clock MiB/s " + " ".join(f"{x:.0f}" for x in tr) if tr else "")
                    + "; notifies " + " ".join(str(r["notifies"]) for r in rs))
        fs_why = fs_note or (f"FAILED ({failed['fs'].splitlines()[0]})" if "fs" in failed else None)
        for mode in ("read", "write"):
            qv = med(res["q"][mode][0])
            qt = med(res["q"][mode][1]) if tsc_hz else None
            mbs = lambda v: f"{v:.0f} MiB/s"
            if "fs" in res:
                fv = med(res["fs"][mode][0])
                v = "PASS" if fv >= 1024 and fv >= qv else "MISS"
                self.rows.append((f"P6 virtio-blk {mode} median", mbs(fv), "QEMU microvm", mbs(qv), f"{fv / qv:.2f}x",
                                  ">= 1.0x, >= 1 GiB/s", v))
                if tsc_hz:
                    ft = med(res["fs"][mode][1])
                    self.rows.append((f"P6  {mode}, guest clock", mbs(ft), "QEMU microvm", mbs(qt), f"{ft / qt:.2f}x", "", ""))
                self.summary.append(f"P6 virtio-blk {mode}: FireSharp {fv:.0f} MiB/s vs QEMU {qv:.0f} MiB/s = {fv / qv:.2f}x "
                                    f"(median of {len(res['fs'][mode][0])}, mib=0 baseline subtracted; page cache warm; "
                                    f"target >= 1 GiB/s and >= QEMU) {v}")
            else:
                self.rows.append((f"P6 virtio-blk {mode} median", "n/a", "QEMU microvm", mbs(qv), "", ">= 1.0x, >= 1 GiB/s",
                                  "n/a"))
                if tsc_hz:
                    self.rows.append((f"P6  {mode}, guest clock", "n/a", "QEMU microvm", mbs(qt), "", "", ""))
                self.summary.append(f"P6 virtio-blk {mode}: FireSharp: {fs_why}; QEMU {qv:.0f} MiB/s "
                                    f"(median of {len(res['q'][mode][0])}, page cache warm)")
        for mode in ("read", "write"):
            if "fs" in res and "fsl" in res:
                fv, lv = med(res["fs"][mode][0]), med(res["fsl"][mode][0])
                v = "PASS" if lv >= 0.95 * fv else "MISS"
                self.rows.append((f"P6 {mode} with limiter ({self.P6_LIMIT})", f"{lv:.0f} MiB/s", "FireSharp, no limiter",
                                  f"{fv:.0f} MiB/s", f"{lv / fv:.2f}x", ">= 0.95x", v))
                if tsc_hz:
                    ft, lt = med(res["fs"][mode][1]), med(res["fsl"][mode][1])
                    self.rows.append((f"P6  {mode} with limiter, guest clock", f"{lt:.0f} MiB/s", "FireSharp, no limiter",
                                      f"{ft:.0f} MiB/s", f"{lt / ft:.2f}x", "", ""))
                self.summary.append(f"P6 limiter cost, {mode}: {lv:.0f} MiB/s with a limiter above the device's speed vs "
                                    f"{fv:.0f} MiB/s without = {lv / fv:.2f}x (target >= 0.95x) {v}")
        self.details.append(f"P6 took {time.perf_counter() - t_start:.1f} s ({runs_done} rounds)")

    # P4/P5 ----------------------------------------------------------------------------------
    P45_MEM_MIB = 128

    def p45_snapshot(self) -> str:
        """A snapshot of counter.elf (128 MiB) taken by `firesharp run --snapshot-*`, shared by P4 and P5."""
        snap = os.path.join(self.a.work, "p45-snapshot")
        if not os.path.isdir(snap):
            self.run("p45-snap", [self.fs, "run", "--kernel", self.g("counter"), "--mem-mib", str(self.P45_MEM_MIB),
                                  "--snapshot-dir", snap, "--snapshot-key", density.bench_key(self.a.work),
                                  "--snapshot-after-ms", "100", "--snapshot-exit"], 30
                     ).check("P4/P5 taking the counter.elf snapshot", "COUNTING")
            if not os.path.isfile(os.path.join(snap, "vmstate")):
                raise RunError(f"P4/P5: firesharp reported success but wrote no snapshot in {snap}")
        return snap

    def p45_restore_cmd(self, snap: str, run_ms: int) -> list[str]:
        return [self.fs, "run", "--snapshot-key", density.bench_key(self.a.work), "--restore", snap, "--exit-after-ms", str(run_ms),
                "--log-level", "Information"]

    def p4(self) -> None:
        n = self.a.p4_runs
        snap = self.p45_snapshot()
        log(f"P4: restore -> guest running, counter.elf {self.P45_MEM_MIB} MiB snapshot, {n} runs (+1 warm-up) ...")
        restored_re = re.compile(r"restored .* in ([\d.]+) ms: state read ([\d.]+) ms, VM created ([\d.]+) ms, "
                                 r"state set ([\d.]+) ms, vCPU threads ([\d.]+) ms")
        running_re = re.compile(r"guest running ([\d.]+) ms after the restore began \(CLOCK_MONOTONIC (\d+) ns\)")
        cmd = self.p45_restore_cmd(snap, 20)
        self.run("p4-warm", cmd, 30).check("P4 warm-up", "")
        load_before = open("/proc/loadavg").read().split()[0]
        inproc, spawn, phases, walls = [], [], [], []
        for i in range(n):
            t_spawn = time.monotonic_ns()
            p = self.run("p4", cmd, 30).check(f"P4 run {i + 1}", "")
            err = p.stderr()
            m, r = restored_re.search(err), running_re.search(err)
            if not m or not r:
                raise RunError(f"P4 run {i + 1}: no restore timing in the log: {err.strip()[-300:]}")
            inproc.append(float(r.group(1)))
            spawn.append((int(r.group(2)) - t_spawn) / 1e6)
            phases.append([float(x) for x in m.groups()])
            walls.append(p.wall * 1000)
        mi, ms_ = med(inproc), med(spawn)
        self.rows.append(("P4 restore -> guest running, median", f"{mi:.2f} ms", "", "", "", "<= 5 ms", "PASS" if mi <= 5 else "MISS"))
        self.rows.append(("P4  p90", f"{pct(inproc, 90):.2f} ms", "", "", "", "", ""))
        self.rows.append(("P4  best (no preemption)", f"{min(inproc):.2f} ms", "", "", "", "", ""))
        try:
            q = self.p4_qemu(self.a.p4_qemu_runs) if self.a.p4_qemu_runs > 0 else None
            qnote = None if q else "not measured (BENCH_P4_QEMU_RUNS=0)"
        except (RunError, OSError, ValueError) as e:
            q, qnote = None, f"not measured: {str(e).splitlines()[0]}"
        if q:
            mq = med(q)
            self.rows.append(("P4  process spawn -> guest running, median", f"{ms_:.1f} ms", "QEMU -incoming file", f"{mq:.1f} ms",
                              f"{ms_ / mq:.2f}x", "(info)", ""))
            self.details.append("P4 QEMU spawn -> incoming migration loaded -> QMP cont answered, ms: " + " ".join(f"{x:.1f}" for x in q))
        else:
            self.rows.append(("P4  process spawn -> guest running, median", f"{ms_:.1f} ms", "", "", "", "(info)", ""))
        names = ("total", "state read", "VM created", "state set", "vCPU threads")
        self.details.append(f"P4 restore call -> first KVM_RUN, ms: " + " ".join(f"{x:.2f}" for x in inproc)
                            + f" (1-min load average {load_before} before, {open('/proc/loadavg').read().split()[0]} after, "
                            f"{os.cpu_count()} cores: a run preempted once by other work takes a scheduler slice more)")
        self.details.append(f"P4 process spawn -> first KVM_RUN, ms: " + " ".join(f"{x:.1f}" for x in spawn))
        self.details.append("P4 restore phases, median ms: " + ", ".join(
            f"{nm} {med([ph[j] for ph in phases]):.2f}" for j, nm in enumerate(names)))
        self.details.append(f"P4 process wall (restore, 20 ms of guest run, teardown), ms: median {med(walls):.1f}")
        self.summary.append(f"P4 restore -> guest running ({self.P45_MEM_MIB} MiB, memory mapped MAP_PRIVATE from the snapshot): "
                            f"median {mi:.2f} ms, p90 {pct(inproc, 90):.2f} ms in the restoring process (restore call to the "
                            f"vCPU's first KVM_RUN); {ms_:.1f} ms from process spawn (NativeAOT start included) "
                            f"(median of {n}; target <= 5 ms) {'PASS' if mi <= 5 else 'MISS'}")
        self.summary.append("P4 QEMU peer (tiny guest, 128 MiB; QMP stop + migrate to a file, then a new QEMU with "
                            "-incoming exec:cat FILE, timed from spawn until QMP cont is answered; savevm/loadvm would need "
                            "a qcow2 disk): " + (f"median {med(q):.1f} ms vs FireSharp {ms_:.1f} ms from spawn = {ms_ / med(q):.2f}x"
                                                 if q else qnote))
        self.p4_jail(snap, n)

    def p4_jail(self, snap: str, n: int) -> None:
        variants = self.jail_variants()
        if not variants:
            return
        log(f"P4: restore through a worker, jail off and on, {n} interleaved runs each (+1 warm-up each) ...")
        running_re = re.compile(r"VM running ([\d.]+) ms after the create/restore call, [\d.]+ ms after the command began "
                                r"\(CLOCK_MONOTONIC (\d+) ns\)")
        spawn: dict[str, list[float]] = {name: [] for name, _ in variants}
        call: dict[str, list[float]] = {name: [] for name, _ in variants}
        base = self.p45_restore_cmd(snap, 20)
        for name, extra in variants:
            self.run("p4-jail-warm", base + extra, 60).check(f"P4 {name} warm-up", "")
        for i in range(n):
            for name, extra in variants:
                t_spawn = time.monotonic_ns()
                p = self.run("p4-jail", base + extra, 60).check(f"P4 {name} run {i + 1}", "")
                r = running_re.search(p.stderr())
                if not r:
                    raise RunError(f"P4 {name} run {i + 1}: no 'VM running' line: {p.stderr().strip()[-300:]}")
                call[name].append(float(r.group(1)))
                spawn[name].append((int(r.group(2)) - t_spawn) / 1e6)
        (off, _), (on, _) = variants
        self.rows.append(("P4  spawn -> guest running, worker, jail on", f"{med(spawn[on]):.1f} ms", "jail off", f"{med(spawn[off]):.1f} ms",
                          f"{med(spawn[on]) / med(spawn[off]):.2f}x", "(info)", ""))
        self.rows.append(("P4  restore call -> running, worker, jail on", f"{med(call[on]):.1f} ms", "jail off", f"{med(call[off]):.1f} ms",
                          f"{med(call[on]) / med(call[off]):.2f}x", "(info)", ""))
        for name, _ in variants:
            self.details.append(f"P4 {name}: spawn -> VM running, ms: " + " ".join(f"{x:.1f}" for x in spawn[name]))
            self.details.append(f"P4 {name}: RestoreVm call (worker launch + restore) -> RUNNING, ms: " + " ".join(f"{x:.1f}" for x in call[name]))
        self.summary.append(f"P4 through a worker: restore call -> running median jail off {med(call[off]):.1f} ms, jail on {med(call[on]):.1f} ms "
                            f"(+{med(call[on]) - med(call[off]):.1f} ms); spawn -> running {med(spawn[off]):.1f} vs {med(spawn[on]):.1f} ms (median of {n})")

    def p4_qemu(self, runs: int) -> list[float]:
        """QEMU's nearest equivalent: the counter guest saved with QMP stop + migrate to a file, then
        `-incoming exec:cat FILE` in a new process; spawn -> migration loaded -> QMP cont answered."""
        import json
        import socket
        base = [self.a.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
                "-m", str(self.P45_MEM_MIB), "-nographic", "-no-reboot", "-kernel", self.g("counter")]
        mig = os.path.join(self.a.work, "p4-qemu.mig")

        def qmp(path: str, proc: Proc):
            deadline = time.perf_counter() + 10
            while True:
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(path)
                    break
                except OSError:
                    s.close()
                    if time.perf_counter() > deadline or proc.exited_within(0):
                        raise RunError(f"QEMU QMP socket {path} did not come up: {proc.stderr().strip()[-200:]}")
                    time.sleep(0.0005)
            s.settimeout(10)
            f = s.makefile("rw")
            json.loads(f.readline())

            def cmd(c: str, **args):
                f.write(json.dumps({"execute": c, **({"arguments": args} if args else {})}) + "\n")
                f.flush()
                while True:
                    r = json.loads(f.readline())
                    if "error" in r:
                        raise RunError(f"QMP {c}: {r['error']}")
                    if "return" in r:
                        return r["return"]
            cmd("qmp_capabilities")
            return s, cmd

        def stop(proc: Proc, cmd) -> None:
            try:
                cmd("quit")
            except (OSError, ValueError, RunError):
                pass
            proc.wait(10)

        sock = os.path.join(self.a.work, "p4-qmp.sock")
        self.seq += 1
        src = Proc(base + ["-qmp", f"unix:{sock},server=on,wait=off"], self.a.work, f"{self.seq:03d}-p4-qemu-src")
        s, cmd = qmp(sock, src)
        time.sleep(0.2)
        cmd("stop")
        cmd("migrate", uri=f"exec:cat > {mig}")
        deadline = time.perf_counter() + 20
        while cmd("query-migrate").get("status") != "completed":
            if time.perf_counter() > deadline:
                raise RunError("QEMU migration to a file did not complete")
            time.sleep(0.01)
        s.close()
        stop(src, cmd)
        out = []
        for i in range(runs + 1):
            os.path.exists(sock) and os.remove(sock)
            self.seq += 1
            p = Proc(base + ["-qmp", f"unix:{sock},server=on,wait=off", "-incoming", f"exec:cat {mig}"],
                     self.a.work, f"{self.seq:03d}-p4-qemu")
            s, cmd = qmp(sock, p)
            while cmd("query-migrate").get("status") != "completed" or cmd("query-status")["status"] != "paused":
                if time.perf_counter() - p.t0 > 20:
                    raise RunError("QEMU incoming migration did not complete")
                time.sleep(0.0005)
            cmd("cont")
            t = (time.perf_counter() - p.t0) * 1000
            if cmd("query-status")["status"] != "running":
                raise RunError("QEMU did not run after cont")
            s.close()
            stop(p, cmd)
            if i > 0:  # the first is a warm-up
                out.append(t)
        return out

    def p5(self) -> None:
        total, par = self.a.p5_count, self.a.p5_parallel
        snap = self.p45_snapshot()
        ncpu = os.cpu_count() or 0
        log(f"P5: {total} restores in new processes, {par} at a time, on {ncpu} cores ...")
        rate, cpu_ms, wall, walls = self.p5_run(self.p45_restore_cmd(snap, 1), "guest running", "")
        self.rows.append((f"P5 restores/s, {ncpu} cores", f"{rate:.0f}/s", "", "", "", ">= 50/s", "PASS" if rate >= 50 else "MISS"))
        self.rows.append(("P5  CPU per restore (process)", f"{cpu_ms:.1f} ms", "", "", "", "(info)", ""))
        self.details.append(f"P5 {total} restores of the {self.P45_MEM_MIB} MiB counter.elf snapshot, each a new "
                            f"`firesharp run --restore --exit-after-ms 1` process, {par} in flight: {wall:.2f} s wall, "
                            f"{rate:.1f} restores/s, {cpu_ms:.1f} CPU-ms (user+sys) per restore; process wall median "
                            f"{med(walls):.1f} ms")
        self.summary.append(f"P5 restores per second: {rate:.0f}/s on {ncpu} cores ({total} restores, each a new process that "
                            f"restores, runs the guest >= 1 ms and exits; {par} in flight; target >= 50/s) "
                            f"{'PASS' if rate >= 50 else 'MISS'}")
        results = {}
        for name, extra in self.jail_variants():
            log(f"P5: {total} restores through a worker ({name}), {par} at a time ...")
            results[name] = self.p5_run(self.p45_restore_cmd(snap, 1) + extra, "VM running", name)
            r, c, w, ws = results[name]
            self.details.append(f"P5 {name}: {total} `firesharp run {' '.join(extra)} --restore --exit-after-ms 1` processes, "
                                f"{par} in flight: {w:.2f} s wall, {r:.1f} restores/s, {c:.1f} CPU-ms per restore, process wall median {med(ws):.1f} ms")
        if len(results) == 2:
            (off, (ro, co, _, _)), (on, (rn, cn, _, _)) = results.items()
            self.rows.append((f"P5  restores/s, worker, jail on", f"{rn:.0f}/s", "jail off", f"{ro:.0f}/s", f"{rn / ro:.2f}x", ">= 50/s",
                              "PASS" if rn >= 50 else "MISS"))
            self.rows.append(("P5  CPU per restore, worker, jail on", f"{cn:.1f} ms", "jail off", f"{co:.1f} ms", f"{cn / co:.2f}x", "(info)", ""))
            self.summary.append(f"P5 through a worker, each restore a new process with a private daemon core: jail off {ro:.0f}/s, "
                                f"jail on {rn:.0f}/s (target >= 50/s with the jail on) {'PASS' if rn >= 50 else 'MISS'}")
        self.p5_daemon(total, par)

    def p5_daemon(self, total: int, par: int) -> None:
        """P5 as a platform restores: `total` RestoreVm calls, `par` in flight, through one long-running daemon (the
        density bench's machinery and idle.elf snapshot, 128 MiB), jail on (the default as root) against --Jail=false."""
        if os.geteuid() != 0:
            return
        rates = {}
        for name, args in (("jail on", []), ("jail off", ["--Jail=false"])):
            log(f"P5: {total} RestoreVm calls through one daemon ({name}), {par} in flight ...")
            d = density.Density(self.fs, self.a.guests, self.a.work, [total], par, 0.5, self.a.p9_step_timeout,
                                lambda m: log(m), serve_args=args, name="p5-daemon")
            try:
                d.run()
            except (density.DensityError, OSError, subprocess.SubprocessError, ValueError) as e:
                self.failures.append(f"P5 through the daemon ({name}): {e}")
                return
            if not d.steps or d.failure:
                self.failures.append(f"P5 through the daemon ({name}): {d.failure or 'nothing restored'}")
                return
            s = d.steps[0]
            rates[name] = s["rate"]
            self.details.append(f"P5 through one daemon, {name}: {s['restored']} RestoreVm calls of a 128 MiB idle.elf snapshot, "
                                f"{par} in flight: {s['wall_s']:.2f} s, {s['rate']:.1f}/s; RestoreVm latency p50 "
                                f"{s.get('lat_p50', 0):.0f} ms, p99 {s.get('lat_p99', 0):.0f} ms")
        rn, ro = rates["jail on"], rates["jail off"]
        self.rows.append(("P5  restores/s, one daemon, jail on", f"{rn:.0f}/s", "jail off", f"{ro:.0f}/s", f"{rn / ro:.2f}x",
                          ">= 50/s", "PASS" if rn >= 50 else "MISS"))
        self.summary.append(f"P5 through one long-running daemon (RestoreVm, {par} in flight): jail on {rn:.0f}/s, jail off "
                            f"{ro:.0f}/s ({rn / ro:.2f}x; target >= 50/s with the jail on) {'PASS' if rn >= 50 else 'MISS'}")

    def p5_run(self, cmd: list[str], running: str, name: str) -> tuple[float, float, float, list[float]]:
        """BENCH_P5_COUNT runs of cmd, BENCH_P5_PARALLEL in flight: (restores/s, CPU ms per restore, wall s, process walls ms)."""
        total, par = self.a.p5_count, self.a.p5_parallel
        what = f"P5 {name}".strip()
        self.run("p5-warm", cmd, 60).check(f"{what} warm-up", "")
        pending = list(range(total))
        live: list[Proc] = []
        done: list[Proc] = []
        t0 = time.perf_counter()
        while pending or live:
            while pending and len(live) < par:
                i = pending.pop(0)
                self.seq += 1
                live.append(Proc(cmd, self.a.work, f"{self.seq:03d}-p5-{i}"))
            ready, _, _ = select.select([p.pidfd for p in live], [], [], 60)
            if not ready:
                raise RunError(f"{what}: no restore finished within 60 s")
            for p in [p for p in live if p.pidfd in ready]:
                live.remove(p)
                done.append(p.wait(1).check(f"{what} restore", ""))
        wall = time.perf_counter() - t0
        for p in done:
            if running not in p.stderr():
                raise RunError(f"{what}: a restore did not report '{running}': {p.stderr().strip()[-300:]}")
        return total / wall, sum(p.cpu for p in done) / total * 1000, wall, [p.wall * 1000 for p in done]

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
        for f in self.failures:
            log(f"\nbench: FAILED: {f}")


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
    ap.add_argument("--worker", default="build/firesharp-vmm")
    ap.add_argument("--p4-runs", type=int, default=20)
    ap.add_argument("--p4-qemu-runs", type=int, default=10)
    ap.add_argument("--p5-count", type=int, default=60)
    ap.add_argument("--p5-parallel", type=int, default=4)
    ap.add_argument("--p6-rounds", type=int, default=5)
    ap.add_argument("--p6-seconds", type=float, default=1.0)
    ap.add_argument("--p6-img-mib", type=int, default=256)
    ap.add_argument("--p6-max-passes", type=int, default=32)
    ap.add_argument("--p6-budget", type=float, default=45.0)
    ap.add_argument("--p9-counts", default="200,500,1000")
    ap.add_argument("--p9-parallel", type=int, default=8)
    ap.add_argument("--p9-cpu-s", type=float, default=2.0)
    ap.add_argument("--p9-step-timeout", type=float, default=300.0)
    ap.add_argument("--jail", type=int, default=1)
    ap.add_argument("--only", default="p1,p2,p3,p4,p5,p6,p9")
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
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
