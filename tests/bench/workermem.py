"""Memory of one firesharp-vmm process hosting an idle guest, driven through the worker protocol as the
daemon drives it (create + start, console replay checked). Used by P3 in bench.py and by
`make bench-worker-size` (worker_size.py)."""
import os
import signal
import subprocess
import time

import workerwire as ww


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "VmPTE", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[k] = int(v.split()[0])
    return out


def smaps_rollup(pid: int) -> dict[str, int]:
    """Pss, Rss, Pss_Anon, Pss_File, Private_* and Shared_* of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def measure_worker(binary: str, guest: str, expect: str, mem_mib: int, work: str, tag: str,
                   hold: float = 1.0, env: dict[str, str] | None = None, time_bin: str | None = None,
                   sample=None) -> dict:
    """Starts `binary --socket`, creates and starts a `mem_mib` guest from `guest`, waits until the console
    shows `expect`, holds `hold` seconds and samples the process, then SIGTERMs it. Returns peak RSS
    (VmHWM, or GNU time's %M when time_bin is given), PSS and the rest in KiB, and CPU ticks while held.
    `sample(pid)`, if given, is called while the guest idles and its dict is merged into the result."""
    sock = os.path.join(work, tag + ".sock")
    log = os.path.join(work, tag + ".log")
    tfile = os.path.join(work, tag + ".time")
    if os.path.exists(sock):
        os.remove(sock)
    argv = [binary, "--socket", sock]
    if time_bin:
        argv = [time_bin, "-f", "%M", "-o", tfile] + argv
    with open(log, "wb") as lf:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})})
    try:
        vmm = child_of(p.pid, 5) if time_bin else p.pid
        t0 = time.perf_counter()
        c = ww.WorkerConnection(sock, 10, t0 + 10)
        try:
            st = c.call(ww.create_request(tag, os.path.abspath(guest), mem_mib))
            if ww.state_name(st) != "CREATED":
                raise RuntimeError(f"create: state {ww.state_name(st)}")
            st = c.call(ww.empty_request(ww.REQ_START))
            if ww.state_name(st) != "RUNNING":
                raise RuntimeError(f"start: state {ww.state_name(st)}")
            con = ww.WorkerConnection(sock, 10)
            try:
                con.console_until(expect, 10)
            finally:
                con.close()
            ready = time.perf_counter() - t0
            time.sleep(hold / 2)
            c0 = cpu_ticks(vmm)
            time.sleep(hold / 2)
            s = proc_status(vmm)
            s.update(smaps_rollup(vmm))
            s["cpu_ticks"] = cpu_ticks(vmm) - c0
            s["ready_s"] = ready
            if sample is not None:
                s.update(sample(vmm))
        finally:
            c.close()
        os.kill(vmm, signal.SIGTERM)
        rc = p.wait(15)
        if rc != 0:
            raise RuntimeError(f"worker exit status {rc} after SIGTERM")
        s["peak"] = int(open(tfile).read().strip().splitlines()[-1]) if time_bin else s["VmHWM"]
        return s
    except BaseException as e:
        p.kill()
        p.wait()
        tail = open(log, "rb").read().decode("utf-8", "replace").strip().splitlines()[-6:]
        if isinstance(e, Exception):
            raise RuntimeError(f"worker {binary} ({tag}): {e}\n  log: " + "\n       ".join(tail)) from e
        raise


def child_of(ppid: int, timeout: float) -> int:
    """The (first) child of `ppid`, once it has one: the VMM under GNU time."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with open(f"/proc/{ppid}/task/{ppid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except FileNotFoundError:  # no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): scan /proc
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open(f"/proc/{d}/stat") as f:
                            if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                                return int(d)
                    except (OSError, IndexError, ValueError):
                        pass
        time.sleep(0.002)
    raise RuntimeError(f"the time wrapper (pid {ppid}) started no child")
