# cairn — build, test, demo. `make demo` and `make test` are the README's quick start.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local

.PHONY: all build release test lint unit demo clean deps test-deps

all: build

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --workspace --release

# The Debian packages building needs (only the missing ones are installed).
deps:
	scripts/deps.sh build

# ...and those the tests need (database servers, MTA, mkfs, nspawn, Python packages).
test-deps:
	scripts/deps.sh test

# Every test: formatting, lints, then the whole suite (unit and end-to-end) with nextest.
# The end-to-end tests run the binaries, so they are built first.
test: test-deps
	$(MAKE) lint build
	$(CARGO) nextest run --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# A real backup and restore on an embedded sample tree (and /etc when run as root),
# in a scratch directory; nothing outside it is changed.
demo: deps
	$(MAKE) release
	CAIRN_BIN_DIR=$(CURDIR)/target/release scripts/demo.sh

clean:
	$(CARGO) clean
