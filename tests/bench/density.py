"""P9, density: N idle clones of one 128 MiB snapshot, restored through the daemon, each in its own worker.

Method. idle.elf (prints IDLE, then `cli; hlt` forever, so a clone costs no guest CPU) is snapshotted once with
128 MiB by `firesharp run --snapshot-*`. A daemon (`firesharp serve`) runs on a socket and state directory in the
work directory, with MaxVms and MemoryOvercommit raised so that admission does not cap N (clones share the
snapshot's page cache, so the 128 MiB each are not resident). `firesharp snapshot bench` (a hidden client
command: one process, one gRPC channel) restores the clones with RestoreVm, P in flight, up to each N in turn
(200, then 300 more for 500, ...), and stops at the first failed restore. After each step, once the clones
settle, the bench reads from /proc:
  - every worker (the daemon's firesharp-vmm children, or a jail's unshare's child): Pss and Rss from smaps_rollup (PSS, because the
    snapshot's memory and the binary are page cache shared by all clones), VmPTE (page tables: kernel memory
    that PSS does not count), threads, fds, and CPU over BENCH_P9_CPU_S seconds (an idle clone should use none);
  - the daemon: VmRSS, VmHWM, Pss, threads, fds;
  - the limits: the daemon's RLIMIT_NOFILE, kernel.pid_max, kernel.threads-max, and the per-user process limit.
Restore rate = clones restored in the step / the step's wall time, with P RestoreVm calls in flight.
The daemon is stopped (SIGTERM, StopVmsOnShutdown) and every worker it started is killed afterwards, always.
As root the daemon jails, confines (seccomp) and cgroups every worker by default; BENCH_P9_SERVE_ARGS adds settings
(for example "--Jail=false") to compare.
"""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import time

import workermem

MEM_MIB = 128
GUEST = "idle"


class DensityError(Exception):
    pass


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cmdline(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/cmdline").replace("\0", " ")
    except OSError:
        return ""


def bench_key(directory: str) -> str:
    """A snapshot HMAC key for the bench (32 random bytes, 0600, made once per work directory): `firesharp run
    --snapshot-dir` signs with it and restores verify with it, as a daemon's own keys do."""
    path = os.path.join(directory, "bench.key")
    if not os.path.isfile(path):
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    return path


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (a unique temporary path), this one excluded."""
    me = os.getpid()
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) != me and text in _cmdline(int(d))]


class Density:
    def __init__(self, fs: str, guests: str, work: str, counts: list[int], parallel: int, cpu_s: float,
                 step_timeout: float, log, serve_args: list[str] | None = None, name: str = "p9"):
        self.fs = fs
        self.guest = os.path.join(guests, GUEST + ".elf")
        self.work = os.path.join(work, name)
        self.serve_args = serve_args
        self.counts = counts
        self.parallel = parallel
        self.cpu_s = cpu_s
        self.step_timeout = step_timeout
        self.log = log
        self.sock = os.path.join(self.work, "daemon.sock")
        self.state = os.path.join(self.work, "state")
        self.daemon: subprocess.Popen | None = None
        self.steps: list[dict] = []
        self.failure: str | None = None
        self.teardown_s: float | None = None

    # ---------------------------------------------------------------------------- running
    def run(self) -> "Density":
        os.makedirs(self.work, exist_ok=True)
        snap = self.snapshot()
        try:
            self.start_daemon()
            base = self.daemon_memory()
            self.daemon_base = base
            have = 0
            for n in self.counts:
                if n <= have:
                    continue
                step = self.restore_to(snap, have, n)
                have += step["restored"]
                step.update(self.measure(have))
                self.steps.append(step)
                self.log(f"  N={have}: {step['restored']} restored in {step['wall_s']:.1f} s ({step['rate']:.0f}/s); "
                         f"per-VM PSS {step['pss_per_vm'] / 1024:.2f} MiB; daemon RSS {step['daemon']['VmRSS'] / 1024:.1f} MiB; "
                         f"idle CPU {step['cpu_ms_per_s_per_vm']:.2f} ms/s per VM")
                if step.get("failed_error"):
                    self.failure = (f"restore of clone #{step['failed_index'] + 1} failed with {have} clones up: "
                                    f"{step['failed_error']}")
                    break
        finally:
            self.stop_all()
        return self

    def snapshot(self) -> str:
        snap = os.path.join(self.work, "snapshot")
        if os.path.isdir(snap):
            return snap
        p = subprocess.run([self.fs, "run", "--kernel", self.guest, "--mem-mib", str(MEM_MIB), "--snapshot-dir", snap,
                            "--snapshot-key", bench_key(self.work), "--snapshot-after-ms", "50", "--snapshot-exit"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        if p.returncode != 0 or b"IDLE" not in p.stdout or not os.path.isfile(os.path.join(snap, "vmstate")):
            raise DensityError(f"taking the {GUEST}.elf snapshot failed (status {p.returncode}): "
                               f"{p.stderr.decode(errors='replace').strip()[-400:]}")
        return snap

    def start_daemon(self) -> None:
        config = os.path.join(self.work, "config.json")
        with open(config, "w") as f:
            f.write("{}\n")  # not /etc/firesharp/config.json
        mem_mib = int(re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo")).group(1)) // 1024
        overcommit = max(1.0, (max(self.counts) + 16) * MEM_MIB / mem_mib * 1.25)
        argv = [self.fs, "serve", "--config", config, f"--Socket={self.sock}", f"--StateDir={self.state}",
                "--StopVmsOnShutdown=true", "--LogLevel=Warning", f"--MaxVms={max(self.counts) + 16}",
                f"--MemoryOvercommit={overcommit:.2f}", f"--AllowedPathRoots={self.work}"]  # the snapshot lives there (a restore loads no kernel)
        # BENCH_P9_SERVE_ARGS: more daemon settings, e.g. "--Jail=false" to measure the jail's share (as root the
        # daemon jails every clone's worker by default).
        argv += self.serve_args if self.serve_args is not None else os.environ.get("BENCH_P9_SERVE_ARGS", "").split()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIRESHARP_")}
        shutil.rmtree(self.state, ignore_errors=True)  # a fresh daemon: nothing to adopt
        # The daemon's key ring holds the bench key that signed the snapshot (a daemon verifies every restore).
        keys = os.path.join(self.state, "snapshot-keys")
        os.makedirs(keys, mode=0o700)
        os.chmod(self.state, 0o700)
        shutil.copyfile(bench_key(self.work), os.path.join(keys, "bench.key"))
        os.chmod(os.path.join(keys, "bench.key"), 0o600)
        self.daemon_log = os.path.join(self.work, "daemon.log")
        with open(self.daemon_log, "wb") as lf:
            self.daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT, env=env)
        deadline = time.perf_counter() + 20
        while not os.path.exists(self.sock):
            if self.daemon.poll() is not None or time.perf_counter() > deadline:
                raise DensityError(f"the daemon did not open {self.sock}: {self.daemon_tail()}")
            time.sleep(0.02)
        self.limits = self.read_limits()

    def daemon_tail(self) -> str:
        try:
            return " | ".join(_read(self.daemon_log).strip().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def restore_to(self, snap: str, have: int, n: int) -> dict:
        argv = [self.fs, "snapshot", "--socket", self.sock, "bench", snap, "--count", str(n - have),
                "--parallel", str(self.parallel), "--prefix", "p9-", "--first", str(have)]
        self.log(f"  restoring clones {have + 1}..{n} through the daemon, {self.parallel} in flight ...")
        before = set(self.workers())
        daemon0 = workermem.cpu_ticks(self.daemon.pid)
        client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.step_timeout)
        except subprocess.TimeoutExpired:
            raise DensityError(f"restoring clones {have + 1}..{n} took over {self.step_timeout:.0f} s (BENCH_P9_STEP_TIMEOUT)")
        client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        daemon_ms = (workermem.cpu_ticks(self.daemon.pid) - daemon0) * 1000.0 / os.sysconf("SC_CLK_TCK")
        worker_ticks = 0
        new = [w for w in self.workers() if w not in before]
        for w in new:
            try:
                worker_ticks += workermem.cpu_ticks(w)
            except OSError:
                pass
        cpu = {"daemon_ms": daemon_ms,
               "client_ms": (client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime) * 1000.0,
               "worker_ms": worker_ticks * 1000.0 / os.sysconf("SC_CLK_TCK")}
        out = {}
        for line in p.stdout.decode(errors="replace").splitlines():
            k, eq, v = line.partition("=")
            if eq:
                out[k] = v
        if "restored" not in out:
            raise DensityError(f"`firesharp snapshot bench` failed (status {p.returncode}): "
                               f"{p.stderr.decode(errors='replace').strip()[-400:]}")
        step = {"from": have, "to": n, "restored": int(out["restored"]), "wall_s": float(out["wall_s"]),
                "rate": float(out["rate"]), "load_after": _read("/proc/loadavg").split()[0]}
        k = max(1, step["restored"])
        step["cpu_per_restore"] = {who: ms / k for who, ms in cpu.items()}
        for k in ("p50", "p90", "p99", "max"):
            if f"latency_ms_{k}" in out:
                step[f"lat_{k}"] = float(out[f"latency_ms_{k}"])
        if "failed_index" in out:
            step["failed_index"] = int(out["failed_index"])
            step["failed_error"] = out.get("failed_error", "?")
        return step

    # ---------------------------------------------------------------------------- measuring
    def workers(self) -> list[int]:
        pid = self.daemon.pid
        kids = set()
        for task in os.listdir(f"/proc/{pid}/task"):  # a child is listed under the thread that started it
            try:
                kids.update(_read(f"/proc/{pid}/task/{task}/children").split())
            except OSError:
                pass
        out = []
        for k in kids:
            try:
                exe = os.path.basename(os.readlink(f"/proc/{k}/exe"))
                if exe == "firesharp-vmm":
                    out.append(int(k))
                elif exe == "unshare":  # a jailed worker is the child of its jail's unshare(1)
                    for g in _read(f"/proc/{k}/task/{k}/children").split():
                        if os.path.basename(os.readlink(f"/proc/{g}/exe")) == "firesharp-vmm":
                            out.append(int(g))
            except OSError:
                pass
        return out

    def daemon_memory(self) -> dict:
        pid = self.daemon.pid
        d = workermem.proc_status(pid)
        d["Pss"] = workermem.smaps_rollup(pid)["Pss"]
        d["fds"] = _fds(pid)
        return d

    def vm_states(self) -> dict[str, int]:
        p = subprocess.run([self.fs, "vm", "--socket", self.sock, "ls", "--json"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        states: dict[str, int] = {}
        if p.returncode == 0:
            for vm in json.loads(p.stdout or b'{"items": []}')["items"]:
                s = vm.get("state", "?").removeprefix("VM_STATE_").lower()
                states[s] = states.get(s, 0) + 1
        return states

    def measure(self, n: int) -> dict:
        time.sleep(1.0)  # let the last clones settle
        pids = self.workers()
        self.seen_workers = set(pids) | getattr(self, "seen_workers", set())
        t0 = time.perf_counter()
        ticks0 = {}
        for pid in pids:
            try:
                ticks0[pid] = workermem.cpu_ticks(pid)
            except OSError:
                pass
        time.sleep(self.cpu_s)
        ticks = 0
        for pid, t in ticks0.items():
            try:
                ticks += workermem.cpu_ticks(pid) - t
            except OSError:
                pass
        cpu_wall = time.perf_counter() - t0
        tot = {"Pss": 0, "Pss_Anon": 0, "Pss_File": 0, "Rss": 0, "VmPTE": 0, "Threads": 0, "fds": 0}
        counted = 0
        for pid in pids:
            try:
                r, s = workermem.smaps_rollup(pid), workermem.proc_status(pid)
                fds = _fds(pid)
            except OSError:
                continue  # it ended meanwhile
            counted += 1
            for k in ("Pss", "Pss_Anon", "Pss_File", "Rss"):
                tot[k] += r.get(k, 0)
            tot["VmPTE"] += s.get("VmPTE", 0)
            tot["Threads"] += s.get("Threads", 0)
            tot["fds"] += fds
        hz = os.sysconf("SC_CLK_TCK")
        states = self.vm_states()
        per = lambda k: tot[k] / counted if counted else 0.0
        return {
            "workers": counted, "states": states, "tot": tot,
            "pss_per_vm": per("Pss"), "pss_anon_per_vm": per("Pss_Anon"), "pss_file_per_vm": per("Pss_File"),
            "rss_per_vm": per("Rss"), "pte_per_vm": per("VmPTE"), "threads_per_vm": per("Threads"),
            "fds_per_vm": per("fds"),
            "cpu_ms_per_s_per_vm": (ticks * 1000.0 / hz) / cpu_wall / counted if counted else 0.0,
            "cpu_pct_total": ticks * 100.0 / hz / cpu_wall,
            "daemon": self.daemon_memory(),
            "loadavg": _read("/proc/loadavg").split()[0],
            "pids_total": sum(1 for d in os.listdir("/proc") if d.isdigit()),
            "threads_total": int(_read("/proc/loadavg").split()[3].split("/")[1]),
        }

    def read_limits(self) -> dict:
        lim = {}
        for line in _read(f"/proc/{self.daemon.pid}/limits").splitlines():
            m = re.match(r"(Max open files|Max processes)\s+(\S+)\s+(\S+)", line)
            if m:
                lim[m.group(1)] = m.group(2)
        lim["pid_max"] = int(_read("/proc/sys/kernel/pid_max"))
        lim["threads_max"] = int(_read("/proc/sys/kernel/threads-max"))
        return lim

    # ---------------------------------------------------------------------------- cleanup
    def stop_all(self) -> None:
        """Stops the daemon (its StopVmsOnShutdown stops the VMs), then kills whatever is left: always."""
        t0 = time.perf_counter()
        if self.daemon is not None and self.daemon.poll() is None:
            try:
                self.seen_workers = set(self.workers()) | getattr(self, "seen_workers", set())
            except OSError:
                pass
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30 + 0.05 * len(getattr(self, "seen_workers", ())))
            except subprocess.TimeoutExpired:
                self.log("  the daemon did not stop in time after SIGTERM; killing it")
                self.daemon.kill()
                self.daemon.wait()
        leftover = pids_mentioning(self.work + "/")
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.perf_counter() + 15
        while pids_mentioning(self.work + "/") and time.perf_counter() < deadline:
            time.sleep(0.1)
        self.leftover_killed = len(leftover)
        self.teardown_s = time.perf_counter() - t0
        if self.daemon is not None:
            self.log(f"  teardown: daemon stopped and {len(leftover)} leftover processes killed in {self.teardown_s:.1f} s")

    # ---------------------------------------------------------------------------- report
    def report(self, rows: list, details: list, summary: list) -> None:
        mib = lambda k: k / 1024
        goal_n, goal_pss, goal_rate = 1000, 5.0, 100.0
        for s in self.steps:
            n = s["workers"]
            pss = mib(s["pss_per_vm"])
            rows.append((f"P9 {n} idle clones: per-VM PSS", f"{pss:.2f} MiB", "goal", f"{goal_pss:.0f} MiB",
                         f"{pss / goal_pss:.2f}x", "<= 5 MiB", "PASS" if pss <= goal_pss else "MISS"))
            rows.append((f"P9  restores/s, clones {s['from'] + 1}-{s['from'] + s['restored']}", f"{s['rate']:.0f}/s", "goal",
                         f"{goal_rate:.0f}/s", f"{s['rate'] / goal_rate:.2f}x", ">= 100/s",
                         "PASS" if s["rate"] >= goal_rate else "MISS"))
            d = s["daemon"]
            rows.append((f"P9  daemon RSS / PSS at {n}", f"{mib(d['VmRSS']):.1f} / {mib(d['Pss']):.1f} MiB", "", "", "", "(info)", ""))
            details.append(
                f"P9 N={n}: workers {n} ({', '.join(f'{v} {k}' for k, v in sorted(s['states'].items()))}); per VM: PSS "
                f"{mib(s['pss_per_vm']):.2f} MiB (anon {mib(s['pss_anon_per_vm']):.2f}, file {mib(s['pss_file_per_vm']):.2f}), "
                f"RSS {mib(s['rss_per_vm']):.2f} MiB, page tables {s['pte_per_vm']:.0f} KiB, {s['threads_per_vm']:.1f} threads, "
                f"{s['fds_per_vm']:.1f} fds, idle CPU {s['cpu_ms_per_s_per_vm']:.2f} ms/s (all workers {s['cpu_pct_total']:.0f}% "
                f"of one core); total worker PSS {mib(s['tot']['Pss']):.0f} MiB")
            lat = ", ".join(f"{k} {s[f'lat_{k}']:.0f} ms" for k in ("p50", "p90", "p99", "max") if f"lat_{k}" in s)
            c = s["cpu_per_restore"]
            details.append(f"P9 restores {s['from'] + 1}-{s['from'] + s['restored']}: {s['restored']} in {s['wall_s']:.2f} s = "
                           f"{s['rate']:.1f}/s with {self.parallel} in flight; RestoreVm latency {lat}; CPU per restore: daemon "
                           f"{c['daemon_ms']:.1f} ms, new worker {c['worker_ms']:.1f} ms (until the step ended), client "
                           f"{c['client_ms']:.1f} ms; 1-min load average {s['load_after']} after the step")
            details.append(f"P9 daemon at N={n}: VmRSS {mib(d['VmRSS']):.1f} MiB, VmHWM {mib(d['VmHWM']):.1f} MiB, PSS "
                           f"{mib(d['Pss']):.1f} MiB, {d['Threads']} threads, {d['fds']} fds (at start: RSS "
                           f"{mib(self.daemon_base['VmRSS']):.1f} MiB, {self.daemon_base['fds']} fds); host: load {s['loadavg']}, "
                           f"{s['pids_total']} processes, {s['threads_total']} threads")
        if getattr(self, "limits", None):
            lim = self.limits
            last = self.steps[-1] if self.steps else None
            head = ""
            if last and last["workers"]:
                fd_per = (last["daemon"]["fds"] - self.daemon_base["fds"]) / last["workers"]
                thr_per = last["threads_per_vm"]
                nofile = lim.get("Max open files", "?")
                fd_room = (f", room for about {int((int(nofile) - self.daemon_base['fds']) / fd_per)} VMs by fds"
                           if nofile.isdigit() and fd_per > 0 else "")
                head = (f"; daemon fds per VM {fd_per:.1f}{fd_room}; threads per VM {thr_per:.1f}, room for about "
                        f"{int(min(lim['threads_max'], lim['pid_max']) / (thr_per + 0.0001))} VMs by threads/pids")
            details.append(f"P9 limits: daemon RLIMIT_NOFILE {lim.get('Max open files')}, max processes {lim.get('Max processes')}, "
                           f"pid_max {lim['pid_max']}, threads-max {lim['threads_max']}{head}")
        if self.teardown_s is not None:
            details.append(f"P9 teardown (daemon SIGTERM with StopVmsOnShutdown, then leftovers killed: "
                           f"{self.leftover_killed}): {self.teardown_s:.1f} s")
        top = max((s["workers"] for s in self.steps), default=0)
        want = max(self.counts)
        rows.append((f"P9 concurrent idle clones (asked {want})", f"{top}", "goal", f"{goal_n}", f"{top / goal_n:.2f}x",
                     ">= 1000", "PASS" if top >= goal_n else "MISS"))
        if self.steps:
            s = self.steps[-1]
            rates = ", ".join(f"{x['rate']:.0f}/s ({x['from'] + 1}-{x['from'] + x['restored']}: "
                              f"{x['rate'] / goal_rate:.2f}x)" for x in self.steps)
            summary.append(f"P9 density: {top} idle 128 MiB clones of one snapshot through the daemon (asked {want}; goal >= 1000: "
                           f"{top / goal_n:.2f}x); per-VM PSS {mib(s['pss_per_vm']):.2f} MiB (goal <= 5 MiB: "
                           f"{mib(s['pss_per_vm']) / goal_pss:.2f}x); restores/s {rates} with {self.parallel} in flight (goal >= 100/s); "
                           f"daemon RSS {mib(s['daemon']['VmRSS']):.1f} MiB, PSS {mib(s['daemon']['Pss']):.1f} MiB")
        if self.failure:
            summary.append(f"P9 limit hit: {self.failure}")
