# Benchmark targets beside `make bench` (P1-P6 and P9, tests/bench/run-bench.sh):
#   make bench-density      P9 alone: N = 200, 500, 1000 idle 128 MiB clones through the daemon (about a minute
#                           here; BENCH_P9_COUNTS, BENCH_P9_PARALLEL as for make bench, which runs the same P9)
#   make bench-worker-size  what each NativeAOT size setting of build/firesharp-vmm saves (one publish per
#                           variant, slow); writes tests/bench/worker-size.results, which make bench prints with P3
.PHONY: bench-density bench-worker-size

bench-density: deps build guests portio-runner
	BENCH_ONLY=p9 bash tests/bench/run-bench.sh

bench-worker-size: deps guests
	bash tests/bench/worker-size.sh
