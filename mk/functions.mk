# Functions (issue 8): Lambda-style functions on a warm pool of microVMs (`firesharp fn ...`).
#   make run        (top-level) includes the function demo: scripts/run-demo.sh packs examples/shell
#                   through the daemon (mke2fs -d), so it needs only build, guests, kernel and rootfs
#   make bench-fn   warm-invoke host overhead (p50/p99) and cold starts, boot vs snapshot, through the
#                   real daemon on a temporary socket (labelled PVM on a PVM host); P7: the daemon's spans
#                   (TraceFile) split warm invokes of the shell sample and the C# example into host-side
#                   time, vsock transit and the guest's in-VM time, against the goal (p50 <= 1 ms, p99 <= 5 ms)
.PHONY: bench-fn

# On PVM one shell invocation takes ~20 s in the guest (every fork is emulated kernel work): fewer samples there.
ifneq ($(wildcard /sys/module/kvm_pvm),)
BENCH_FN_WARM ?= 15
BENCH_FN_WARM_CS ?= 100
BENCH_FN_COLD ?= 2
else
BENCH_FN_WARM ?= 200
BENCH_FN_WARM_CS ?= 500
BENCH_FN_COLD ?= 3
endif

bench-fn: build guests kernel rootfs example-csharp-image
	BENCH_FN_WARM=$(BENCH_FN_WARM) BENCH_FN_WARM_CS=$(BENCH_FN_WARM_CS) BENCH_FN_COLD=$(BENCH_FN_COLD) bash mk/bench-fn.sh
