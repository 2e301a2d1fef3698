# Functions (issue 8): Lambda-style functions on a warm pool of microVMs (`firesharp fn ...`).
#   make run        (top-level) includes the function demo: scripts/run-demo.sh packs examples/shell
#                   through the daemon (mke2fs -d), so it needs only build, guests, kernel and rootfs
#   make bench-fn   warm-invoke host overhead (p50/p99) and cold starts, boot vs snapshot, through the
#                   real daemon on a temporary socket (labelled PVM on a PVM host)
.PHONY: bench-fn

# On PVM one shell invocation takes ~20 s in the guest (every fork is emulated kernel work): fewer samples there.
ifneq ($(wildcard /sys/module/kvm_pvm),)
BENCH_FN_WARM ?= 15
BENCH_FN_COLD ?= 2
else
BENCH_FN_WARM ?= 200
BENCH_FN_COLD ?= 3
endif

bench-fn: build guests kernel rootfs
	BENCH_FN_WARM=$(BENCH_FN_WARM) BENCH_FN_COLD=$(BENCH_FN_COLD) bash mk/bench-fn.sh
