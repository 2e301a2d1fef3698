#!/usr/bin/env python3
"""Measures worker variants built by worker-size.sh (`make bench-worker-size`) and writes the results table.

Each variant is an argument `name|binary|description[|VAR=value,...]` (the environment it runs with, for the
runtime's knobs); the variant named `current` is the reference. Every
round runs each variant once (interleaved, so load from elsewhere hits all alike): the worker hosts an idle
128 MiB guest (idle.elf) created and started through the worker protocol, peak RSS is GNU time's %M (so the
shutdown is included, as for QEMU in P3), PSS is read from smaps_rollup while idle. The figure per variant
is the median over the rounds; "saved" is the variant's median minus the current one's, that is, what the
setting that the variant reverts saves (a negative figure: what a candidate would save)."""
import argparse
import datetime
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workermem  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--commit", default="?")
    ap.add_argument("variants", nargs="+")
    a = ap.parse_args()
    vs = []
    for v in a.variants:
        name, binary, what, *env = v.split("|", 3)
        vs.append((name, binary, what, dict(kv.split("=", 1) for kv in env[0].split(",") if kv) if env else {}))
    time_bin = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    res: dict[str, list[dict]] = {name: [] for name, _, _, _ in vs}
    for r in range(a.rounds):
        for name, binary, _, env in vs:
            res[name].append(workermem.measure_worker(binary, a.guest, "IDLE", 128, a.work, f"{name}-{r}",
                                                      hold=1.0, env=env, time_bin=time_bin))
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{n} {res[n][-1]['peak'] / 1024:.2f}" for n, _, _, _ in vs) + " MiB",
              flush=True)
    med = lambda name, k: statistics.median(s[k] for s in res[name]) / 1024
    ref = "current" if "current" in res else vs[0][0]
    pvm = " (PVM host, software virtualization)" if os.path.isdir("/sys/module/kvm_pvm") else ""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [
        f"# firesharp-vmm size settings: `make bench-worker-size`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit {a.commit}",
        f"# measured on {cpu}, {os.cpu_count()} cores{pvm}; idle 128 MiB guest (idle.elf) through the worker protocol;",
        f"# median of {a.rounds} interleaved runs; peak = GNU time %M (shutdown included); saved = variant - current",
        f"# the {ref} build's peak ranged {min(x['peak'] for x in res[ref]) / 1024:.2f}-{max(x['peak'] for x in res[ref]) / 1024:.2f} MiB "
        f"over the runs: smaller differences are noise",
        f"{'variant':<15} {'binary':>9} {'peak RSS':>9} {'PSS':>8} {'anon':>7} {'saved':>7}  what",
    ]
    for name, binary, what, _ in vs:
        size = os.path.getsize(binary) / 1048576
        saved = med(name, "peak") - med(ref, "peak")
        lines.append(f"{name:<15} {size:7.1f}Mi {med(name, 'peak'):7.2f}Mi {med(name, 'Pss'):6.2f}Mi "
                     f"{med(name, 'RssAnon'):5.2f}Mi {('' if name == ref else f'{saved:+.2f}Mi'):>7}  {what}")
    text = "\n".join(lines) + "\n"
    print()
    print(text, end="")
    with open(a.out, "w") as f:
        f.write(text)
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
