# Example functions for FireSharp's Lambda-style functions (examples/, issue 8). Included by the
# top-level Makefile.
#
#   make example-shell-image    build/examples/shell-code.ext4: examples/shell (busybox-sh bootstrap
#                               + function.sh) as an ext4 code image, for /var/task
#   make example-csharp         the C# NativeAOT example (examples/csharp), published as a static
#                               `bootstrap` into $(FIRESHARP_CACHE)/examples/csharp/<hash>/ (hash of
#                               its inputs) and linked to build/examples/csharp/bootstrap
#   make example-csharp-image   build/examples/csharp-code.ext4: that bootstrap as a code image
#   make examples               all of the above
#   make examples-clean
#
# A code image holds the function's files at its root (bootstrap, handler files); the agent finds
# /var/task/bootstrap when the image is mounted read-only at /var/task. Handler: function.handler.
# `make code-image DIR=path/to/function OUT=path/to/code.ext4` packs any function directory.

EXAMPLES_OUT := build/examples
EXAMPLES_CACHE := $(FIRESHARP_CACHE)/examples
SHELL_EXAMPLE_FILES := examples/shell/bootstrap examples/shell/function.sh
CSHARP_EXAMPLE_INPUTS := $(sort $(wildcard examples/csharp/*.cs examples/csharp/*.csproj)) Directory.Build.props

.PHONY: examples example-shell-image example-csharp example-csharp-image examples-clean code-image

examples: example-shell-image example-csharp-image

example-shell-image: $(EXAMPLES_OUT)/shell-code.ext4

# Only the function's files go into the image (no README).
$(EXAMPLES_OUT)/shell-code.ext4: $(SHELL_EXAMPLE_FILES) mk/examples.mk
	@rm -rf $(EXAMPLES_OUT)/shell-tree && mkdir -p $(EXAMPLES_OUT)/shell-tree
	install -m 0755 examples/shell/bootstrap $(EXAMPLES_OUT)/shell-tree/bootstrap
	install -m 0644 examples/shell/function.sh $(EXAMPLES_OUT)/shell-tree/function.sh
	@$(MAKE) --no-print-directory code-image DIR=$(EXAMPLES_OUT)/shell-tree OUT=$@
	@rm -rf $(EXAMPLES_OUT)/shell-tree

# The publish goes to the cache, keyed by the sources and the SDK, so an unchanged example is not rebuilt.
CSHARP_EXAMPLE_HASH = $(shell { cat $(CSHARP_EXAMPLE_INPUTS); $(DOTNET) --version; } | sha256sum | cut -c1-16)

example-csharp:
	@out="$(EXAMPLES_CACHE)/csharp/$(CSHARP_EXAMPLE_HASH)"; \
	if [ ! -x "$$out/bootstrap" ]; then \
	    echo "publishing examples/csharp -> $$out"; \
	    rm -rf "$$out.tmp" && \
	    $(DOTNET) publish examples/csharp/HelloFunction.csproj -c Release -r linux-x64 -o "$$out.tmp" \
	        --artifacts-path "$(EXAMPLES_CACHE)/csharp/artifacts" --nologo -v quiet && \
	    file "$$out.tmp/bootstrap" | grep -q 'statically linked' && \
	    rm -rf "$$out" && mkdir -p "$$out" && cp "$$out.tmp/bootstrap" "$$out/bootstrap" && rm -rf "$$out.tmp" \
	    || { echo "example-csharp: publish failed (or not static)"; exit 1; }; \
	fi; \
	mkdir -p $(EXAMPLES_OUT)/csharp && ln -sfn "$$out/bootstrap" $(EXAMPLES_OUT)/csharp/bootstrap; \
	echo "example-csharp: $$out/bootstrap ($$(du -h "$$out/bootstrap" | cut -f1), static)"

example-csharp-image: example-csharp
	@rm -rf $(EXAMPLES_OUT)/csharp-tree && mkdir -p $(EXAMPLES_OUT)/csharp-tree
	install -m 0755 $(EXAMPLES_OUT)/csharp/bootstrap $(EXAMPLES_OUT)/csharp-tree/bootstrap
	@$(MAKE) --no-print-directory code-image DIR=$(EXAMPLES_OUT)/csharp-tree OUT=$(EXAMPLES_OUT)/csharp-code.ext4
	@rm -rf $(EXAMPLES_OUT)/csharp-tree

# code-image DIR=... OUT=...: an ext4 image of DIR's contents (owned by root; size: contents + 50% + 1 MiB,
# at least 2 MiB). Fixed timestamps, so the same files give the same image bytes.
code-image:
	@test -n "$(DIR)" -a -n "$(OUT)" || { echo "usage: make code-image DIR=function-dir OUT=image.ext4"; exit 2; }
	@test -d "$(DIR)" || { echo "code-image: $(DIR) is not a directory"; exit 2; }
	@command -v mke2fs >/dev/null || { echo "code-image: mke2fs not found (apt-get install e2fsprogs)"; exit 1; }
	@mkdir -p $(dir $(OUT))
	@kib=$$(du -sk "$(DIR)" | cut -f1); size=$$(( kib * 3 / 2 + 1024 )); [ $$size -ge 2048 ] || size=2048; \
	rm -f "$(OUT).tmp" && : > "$(OUT).tmp" && \
	find "$(DIR)" -exec touch -h -d @1700000000 {} + && \
	E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext4 -L function-code -m 0 \
	    -U 6c616d62-6461-4000-8000-000000000001 -E root_owner=0:0,hash_seed=6c616d62-6461-4000-8000-000000000001 \
	    -d "$(DIR)" -F "$(OUT).tmp" "$${size}k" && mv "$(OUT).tmp" "$(OUT)" && \
	echo "code-image: $(OUT) ($${size} KiB) from $(DIR)"

examples-clean:
	rm -rf $(EXAMPLES_OUT)
