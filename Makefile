# Karpetrack: two set-up commands, `make run` and `make test`. See README.md.
SHELL := /bin/bash
CONFIG ?= Release
DOTNET ?= dotnet
ARGS ?=
RESULTS := $(CURDIR)/.tmp/test-results

.PHONY: run build test test-deps bench clean publish image

build:
	$(DOTNET) build Karpetrack.csproj -c $(CONFIG) -nologo -v q

# Runs the service on the embedded demo cluster; `make run ARGS="--metrics-addr :9200"` adds flags.
run: build
	$(DOTNET) bin/$(CONFIG)/net10.0/karpetrack.dll --demo $(ARGS)

# Installs what the tests need when it is missing (idempotent), publishes the native binary (its
# end-to-end tests run it), then runs every test (the main
# project, then the packer's OR-Tools oracle) and ends with one plain summary line "N passed, N failed".
test: test-deps publish
	@rm -rf $(RESULTS); mkdir -p $(RESULTS)
	@set +e; rc=0; \
	  $(DOTNET) test tests/Karpetrack.Tests/Karpetrack.Tests.csproj -c $(CONFIG) -nologo \
	    --logger "trx;LogFileName=results.trx" --results-directory $(RESULTS) || rc=1; \
	  $(DOTNET) test tests/Karpetrack.Oracle.Tests/Karpetrack.Oracle.Tests.csproj -c $(CONFIG) -nologo \
	    --logger "trx;LogFileName=oracle.trx" --results-directory $(RESULTS) || rc=1; \
	  bash tests/summary.sh $(RESULTS)/results.trx $(RESULTS)/oracle.trx; exit $$rc

test-deps:
	@bash tests/install-deps.sh

# `make bench ARGS=faults`: the fault-injection suite's full sweep (a crash before and after every write of each
# reference run, not the default sample; several minutes), through the test project where its rig lives.
bench: build
	@if [ "$(ARGS)" = "faults" ]; then \
	  KARPETRACK_FAULT_SWEEP=full $(DOTNET) test tests/Karpetrack.Tests/Karpetrack.Tests.csproj -c $(CONFIG) -nologo \
	    --filter "FullyQualifiedName~Karpetrack.Tests.Actuation.FaultInjectionTests" --logger "console;verbosity=detailed"; \
	else \
	  $(DOTNET) run -c Release --project bench/Karpetrack.Bench/Karpetrack.Bench.csproj -- $(ARGS); \
	fi

# The shipped binary: a linux-x64 NativeAOT executable at .tmp/publish/karpetrack, the same step the
# Dockerfile runs. The native toolchain (clang, zlib1g-dev) is installed first where it is missing.
publish:
	@if ! command -v clang >/dev/null 2>&1 || ! dpkg -s zlib1g-dev >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null && \
	  apt-get install -y -qq --no-install-recommends clang zlib1g-dev >/dev/null; fi
	$(DOTNET) publish Karpetrack.csproj -c $(CONFIG) -r linux-x64 -p:PublishAot=true -nologo -o .tmp/publish

IMAGE ?= karpetrack:dev
# Only where a Docker engine answers; elsewhere say so instead of failing halfway.
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  docker build -t $(IMAGE) . ; \
	else \
	  echo "make image: no Docker engine here (docker info fails); build the Dockerfile where one runs, or use 'make publish'"; \
	fi

clean:
	rm -rf bin obj tests/*/bin tests/*/obj bench/*/bin bench/*/obj .tmp
