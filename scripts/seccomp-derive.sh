#!/bin/sh
# Re-derives the worker's seccomp allow-list (docs/isolation.md, "How it was derived"): runs tests through the
# real daemon with every worker under `strace -f` and the filter off, then prints, over all workers, each syscall
# made after the worker's first KVM_RUN (where the filter goes in) and the arguments the filter checks.
#
#   scripts/seccomp-derive.sh [dotnet test filter]        (needs `make build` and a built test project)
#   scripts/seccomp-derive.sh --analyze DIR               (only the summary of traces already in DIR)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)

analyze() {
    python3 - "$1" <<'PY'
import collections, glob, os, re, sys
line = re.compile(r'^\d+\s+(\w+)\((.*)$')   # "<pid> name(args" (not "<... name resumed>")
calls, args = collections.Counter(), collections.defaultdict(collections.Counter)
files = glob.glob(os.path.join(sys.argv[1], 't.*'))
for f in files:
    running = False
    for text in open(f, errors='replace'):
        m = line.match(text)
        if not m: continue
        name, rest = m.groups()
        running = running or (name == 'ioctl' and ', KVM_RUN' in rest)
        if not running: continue
        calls[name] += 1
        a = [x.split(')')[0].split(' <unfinished')[0] for x in rest.split(', ')]
        if name in ('ioctl', 'fcntl') and len(a) > 1: args[name][a[1]] += 1
        if name in ('socket', 'prctl'): args[name][a[0]] += 1
        if name == 'clone': args[name][re.sub(r'.*flags=([A-Z_|]+).*', r'\1', rest.strip())] += 1
print(f'{len(files)} workers traced; after the first KVM_RUN:')
print('syscalls:', ' '.join(sorted(calls)))
for name in sorted(args): print(f'{name}:', ' '.join(f'{k}({v})' for k, v in sorted(args[name].items())))
PY
}

if [ "${1:-}" = "--analyze" ]; then analyze "$2"; exit 0; fi
filter=${1:-'FullyQualifiedName~DaemonProcessTests|FullyQualifiedName~SnapshotDaemonTests|FullyQualifiedName~LinuxCloneTests.RestoreVm_clones_run_in_their_own_worker_processes|FullyQualifiedName~SeccompLinuxTests'}
dir=$(mktemp -d /tmp/seccomp-trace.XXXXXX)
cat > "$dir/vmm.sh" <<SH
#!/bin/sh
exec strace -f -qq -s 64 -o $dir/t.\$\$ $repo/build/firesharp-vmm "\$@"
SH
chmod +x "$dir/vmm.sh"
# The daemon's settings from the environment: every worker through the wrapper, none filtered.
FIRESHARP_WORKERBINARY="$dir/vmm.sh" FIRESHARP_SECCOMP=false FIRESHARP_REQUIRE_KVM=1 \
    dotnet test "$repo/tests/FireSharp.Tests/FireSharp.Tests.csproj" -c Release --no-build --filter "$filter" || true
analyze "$dir"
echo "traces: $dir"
