#!/bin/sh
# FireSharp guest self-test, run by /init when the kernel command line has
# firesharp.script=1. Prints a few facts about the guest and ends with
# SELFTEST-OK if every check passed, SELFTEST-FAIL otherwise.

fail=0
check() {
    # check DESCRIPTION COMMAND...: run COMMAND, report failure.
    desc="$1"; shift
    if ! "$@"; then
        echo "selftest: FAILED: $desc"
        fail=1
    fi
}

echo "selftest: uname: $(uname -srm)"
echo "selftest: cpus: $(grep -c ^processor /proc/cpuinfo)"
echo "selftest: mem: $(grep MemTotal /proc/meminfo | tr -s ' ')"
echo "selftest: root: $(grep ' / ' /proc/mounts | cut -d' ' -f1-3)"
echo "selftest: /:" $(ls /)
echo "selftest: entropy_avail: $(cat /proc/sys/kernel/random/entropy_avail)"

check "devtmpfs /dev/console" test -c /dev/console
# Only the node: reading /dev/urandom before the kernel's RNG is seeded makes
# the kernel spin for timer jitter entropy (~2.5 s at HZ=100, all of it
# emulated kernel work on PVM). A VMM seeds it at boot with a
# SETUP_RNG_SEED setup_data entry (CONFIG_RANDOM_TRUST_BOOTLOADER=y).
check "/dev/urandom node" test -c /dev/urandom
check "sysfs mounted" test -d /sys/kernel
check "/tmp is tmpfs" grep -q '^tmpfs /tmp tmpfs ' /proc/mounts
check "/dev/pts is devpts" grep -q '^devpts /dev/pts devpts ' /proc/mounts
check "tmpfs /tmp writable" sh -c 'echo ok > /tmp/selftest && grep -qx ok /tmp/selftest'
check "pipes and fork" sh -c '[ "$(echo abc | tr a-c x-z)" = xyz ]'
check "loopback interface" ip link set lo up

if [ "$fail" = 0 ]; then
    echo SELFTEST-OK
else
    echo SELFTEST-FAIL
fi
