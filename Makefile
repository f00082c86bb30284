# Warden's tasks. `make demo` and `make test` do all set-up on a fresh machine.

CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2
PREVIEW1_TARGET := wasm32-wasip1
GUEST_TARGET_DIR := target/guests
GUESTS := $(GUEST_TARGET_DIR)/$(GUEST_TARGET)/release
GUEST_ARGS := --manifest-path guests/Cargo.toml --target $(GUEST_TARGET) --target-dir $(GUEST_TARGET_DIR)
WARDEN := target/debug/warden
DEMO := target/demo
TOOLCHAINS := target/toolchains
# `wasmtime serve`, which the export-http tests run exported apps under.
WASMTIME := $(TOOLCHAINS)/wasmtime/bin/wasmtime
# The C guest's compiler: Debian's clang with the WASI sysroot and runtime.
C_PACKAGES := clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32
# The kv capability's Redis backend is tested against Debian's server.
REDIS_PACKAGES := redis-server
# `make demo` asks `warden serve` for things over HTTP.
DEMO_PACKAGES := curl
DEMO_PORT ?= 8931
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SOAK_CALLS ?= 100000
SOAK_CALLERS ?= 16
FUZZ_SECONDS ?= 60
LOAD_SECONDS ?= 10
# `make load`: the load generator, and curl to wait for the servers.
LOAD_PACKAGES := wrk curl

.PHONY: setup guests build demo test lint doc clean bench soak fuzz wasmtime load

## setup: install what a fresh machine lacks: the wasm32-wasip2 and -wasip1 targets, clippy, rustfmt, and the
## Python (componentize-py, in a virtual environment), JavaScript (componentize-js, npm ci) and C (Debian's
## clang-19, lld-19, wasi-libc) guest toolchains, the first two under target/toolchains; and Debian's redis-server
## for the kv tests
setup:
	@rustup target list --installed | grep -qx '$(GUEST_TARGET)' || rustup target add $(GUEST_TARGET)
	@rustup target list --installed | grep -qx '$(PREVIEW1_TARGET)' || rustup target add $(PREVIEW1_TARGET)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@dpkg -s $(C_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(C_PACKAGES); }
	@dpkg -s $(REDIS_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(REDIS_PACKAGES); }
	@cmp -s guests/python/requirements.txt $(TOOLCHAINS)/python/installed-requirements.txt || { \
		python3 -m venv $(TOOLCHAINS)/python && \
		$(TOOLCHAINS)/python/bin/pip install -q -r guests/python/requirements.txt && \
		cp guests/python/requirements.txt $(TOOLCHAINS)/python/installed-requirements.txt; }
	@cmp -s guests/js/package-lock.json $(TOOLCHAINS)/js/installed-package-lock.json || { \
		mkdir -p $(TOOLCHAINS)/js && cp guests/js/package.json guests/js/package-lock.json $(TOOLCHAINS)/js/ && \
		npm ci --prefix $(TOOLCHAINS)/js --no-audit --no-fund --loglevel=error && \
		cp guests/js/package-lock.json $(TOOLCHAINS)/js/installed-package-lock.json; }

## guests: build every guest: the Rust ones in guests/ for wasm32-wasip2 (and the program for wasm32-wasip1),
## and hello in Python, JavaScript and C (tests/build.rs does it; outputs in target/guests)
guests: setup
	$(CARGO) build --workspace

## build: build the warden library and CLI (with the workspace's features, so `make test` and `make demo`
## share one build of the dependencies)
build: setup
	$(CARGO) build --workspace --bins

## demo: build the hello guest and run it through `warden run` under limits, then serve the example manifest
## over HTTP with `warden serve`
demo: guests build
	@dpkg -s $(DEMO_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(DEMO_PACKAGES); }
	@mkdir -p $(DEMO)
	@echo
	@echo '$$ warden run hello.wasm count-vowels --input "hello world" --unsigned allow --timeout 1s --memory 16MiB --fuel 10000000'
	@$(WARDEN) run $(GUESTS)/hello.wasm count-vowels --input 'hello world' --unsigned allow \
		--timeout 1s --memory 16MiB --fuel 10000000 >$(DEMO)/out 2>$(DEMO)/err; \
		status=$$?; echo "stdout: $$(cat $(DEMO)/out)"; echo "stderr: $$(cat $(DEMO)/err)"; \
		exit $$status
	@echo
	@echo '$$ warden run hello.wasm greet --input Warden --json --unsigned allow'
	@$(WARDEN) run $(GUESTS)/hello.wasm greet --input Warden --json --unsigned allow
	@echo
	@echo '$$ printf "hello\nstreaming world\n" | warden run hello_v2.wasm upper --unsigned allow   # world 0.2: output flows as input arrives'
	@printf 'hello\nstreaming world\n' | $(WARDEN) run $(GUESTS)/hello_v2.wasm upper --unsigned allow
	@echo
	@echo '$$ warden run hostile.wasm loop --timeout 300ms --unsigned allow     # a guest that never returns'
	@$(WARDEN) run $(GUESTS)/hostile.wasm loop --timeout 300ms --unsigned allow; \
		status=$$?; echo "exit code $$status (timeout)"; test $$status -eq 20
	@echo
	@echo '$$ warden keygen demo && warden sign hello.wasm --key demo.key && warden trust add demo.pub --name demo'
	@rm -f $(DEMO)/demo.key $(DEMO)/demo.pub $(DEMO)/trust.toml
	@$(WARDEN) keygen $(DEMO)/demo >/dev/null
	@$(WARDEN) sign $(GUESTS)/hello.wasm --key $(DEMO)/demo.key -o $(DEMO)/hello.wasm >/dev/null
	@$(WARDEN) trust add $(DEMO)/demo.pub --name demo --trust-store $(DEMO)/trust.toml
	@echo '$$ warden run hello.wasm count-vowels --input "signed and trusted" --unsigned deny --signed-by trusted'
	@$(WARDEN) run $(DEMO)/hello.wasm count-vowels --input 'signed and trusted' \
		--unsigned deny --signed-by trusted --trust-store $(DEMO)/trust.toml >$(DEMO)/out 2>$(DEMO)/err; \
		status=$$?; echo "stdout: $$(cat $(DEMO)/out)"; echo "stderr: $$(cat $(DEMO)/err)"; \
		exit $$status
	@echo
	@echo '$$ warden serve --manifest warden.toml --addr 127.0.0.1:$(DEMO_PORT) &     # every plugin of the manifest over HTTP'
	@$(WARDEN) serve --manifest warden.toml --addr 127.0.0.1:$(DEMO_PORT) --no-watch 2>$(DEMO)/serve.log & \
		server=$$!; trap 'kill $$server 2>/dev/null' EXIT; \
		for _ in $$(seq 300); do curl -fs -o /dev/null http://127.0.0.1:$(DEMO_PORT)/readyz && break; sleep 0.1; done; \
		echo '$$ curl -d "hello world" localhost:$(DEMO_PORT)/plugins/hello/count-vowels'; \
		curl -fsS -d 'hello world' http://127.0.0.1:$(DEMO_PORT)/plugins/hello/count-vowels && echo || exit 1; \
		echo '$$ curl localhost:$(DEMO_PORT)/plugins/hello'; \
		curl -fsS http://127.0.0.1:$(DEMO_PORT)/plugins/hello && echo || exit 1; \
		echo '$$ curl -d "" localhost:$(DEMO_PORT)/plugins/nobody/echo'; \
		curl -sS -w ' (HTTP %{http_code})\n' -d '' http://127.0.0.1:$(DEMO_PORT)/plugins/nobody/echo; \
		echo '$$ kill -TERM %1     # drains requests in flight, then exits'; \
		kill -TERM $$server; wait $$server; status=$$?; trap - EXIT; \
		echo 'its log (one JSON object per line):'; sed 's/^/  /' $(DEMO)/serve.log; exit $$status

## test: formatting, lints, API docs, every test and doctest (builds the guests itself) and the embedding examples.
## The tests run under cargo-nextest, each in a process of its own and in a home of its own, never the user's; a
## test still running after three minutes (ten for the quick starts and the conformance test, which build guests)
## is killed and fails the run (.config/nextest.toml). nextest does not run doctests: `cargo test --doc` does
test: lint doc wasmtime
	@command -v cargo-nextest >/dev/null || { echo 'make test needs cargo-nextest: cargo install --locked cargo-nextest' >&2; exit 1; }
	@# Every process a test starts gets a home of its own; these directories keep the tests themselves (which
	@# read the default trust store when they parse a manifest) out of the user's too.
	home=$$(mktemp -d) && trap 'rm -rf "$$home"' EXIT && \
		export XDG_CONFIG_HOME="$$home/config" XDG_CACHE_HOME="$$home/cache" XDG_DATA_HOME="$$home/data" \
			XDG_STATE_HOME="$$home/state" && \
		$(CARGO) nextest run --workspace && $(CARGO) test --doc --workspace
	@echo "hello in every language (tests/all/conformance.rs):" && cat target/conformance.txt
	$(CARGO) run --quiet -p warden --example embed -- $(GUESTS)/hello.wasm
	$(CARGO) run --quiet -p warden --example text-filter -- $(GUESTS)/text_filter.wasm
	$(CARGO) run --quiet -p warden-export --example compose -- $(GUESTS)/hello.wasm target/hello-http.wasm

## lint: rustfmt and clippy (warnings are errors) on the host and the guests
lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path guests/Cargo.toml --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p warden --lib -- -D warnings
	$(CARGO) clippy $(GUEST_ARGS) --release --all-targets -- -D warnings

## doc: API documentation, warnings are errors
doc:
	RUSTDOCFLAGS='-D warnings' $(CARGO) doc -p warden -p warden-serve -p warden-export --no-deps

clean:
	$(CARGO) clean

## bench: every host side by side (Warden, Extism, raw-pointer, native), results in docs/performance.md; then criterion
bench: setup
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	env -u RUST_BACKTRACE $(CARGO) run --release --manifest-path bench/Cargo.toml --target-dir target/bench \
		--bin compare -- --write docs/performance.md
	env -u RUST_BACKTRACE $(CARGO) bench --manifest-path bench/Cargo.toml --target-dir target/bench

## soak: 100,000 executions of good and hostile guests from 16 callers; fails on any unexpected outcome or >10% RSS growth
soak: setup
	$(CARGO) run --release -p warden-tests --example soak -- --calls $(SOAK_CALLS) --callers $(SOAK_CALLERS)

## wasmtime: the official wasmtime 48 binary (pinned by hash in tests/wasmtime-requirements.txt) under
## target/toolchains/wasmtime, for the tests that run `warden export-http` apps under `wasmtime serve`
wasmtime:
	@cmp -s tests/wasmtime-requirements.txt $(TOOLCHAINS)/wasmtime/installed-requirements.txt || { \
		rm -rf $(TOOLCHAINS)/wasmtime && mkdir -p $(TOOLCHAINS)/wasmtime/bin && \
		python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
			-r tests/wasmtime-requirements.txt -d $(TOOLCHAINS)/wasmtime/wheel && \
		python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("wasmtime_cli/wasmtime"))' \
			$(TOOLCHAINS)/wasmtime/wheel/*.whl $(WASMTIME) && \
		chmod +x $(WASMTIME) && \
		cp tests/wasmtime-requirements.txt $(TOOLCHAINS)/wasmtime/installed-requirements.txt; }

## load: wrk against `warden serve` and against `wasmtime serve -O pooling-allocator=y` running the
## `warden export-http` app of the same hello plugin, 1, 4 and 16 connections, LOAD_SECONDS each; prints the
## side-by-side table and writes it at the end of docs/performance.md
load: setup wasmtime
	@dpkg -s $(LOAD_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(LOAD_PACKAGES); }
	$(CARGO) build --workspace
	$(CARGO) build --release -p warden-cli
	bench/load.sh target/release/warden $(WASMTIME) $(GUESTS)/hello.wasm $(LOAD_SECONDS)

## fuzz: each fuzz target (load, execute, manifest, cli) for FUZZ_SECONDS; findings land in tests/fuzz/regressions/
fuzz: setup
	$(CARGO) build --release -p warden-cli
	$(CARGO) run --release -p warden-tests --example fuzz -- --seconds $(FUZZ_SECONDS) --warden target/release/warden
