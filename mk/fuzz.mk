# Coverage-guided fuzzing (issue 18): SharpFuzz instruments the FireSharp assemblies, AFL++ drives each target
# in tests/fuzz/FireSharp.Fuzz for FUZZ_SECONDS and the script prints executions, executions/s, paths, crashes
# and hangs per target. FUZZ_TARGETS picks some targets (names from `FireSharp.Fuzz list`).
FUZZ_SECONDS ?= 60
export FUZZ_SECONDS

.PHONY: fuzz
fuzz: deps
	FUZZ_TARGETS="$(FUZZ_TARGETS)" bash tests/fuzz/run-fuzz.sh
