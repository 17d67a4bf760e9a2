# pacs-edge: every command CI and a developer need. `make test` is what .ci/run calls.
#   make run     - set up .venv, build, start the engine on its embedded defaults (ARGS="..." adds serve flags)
#   make test    - install test peers and tools, build, lint, cargo test, pytest
#   make bench   - quick ingest benchmark against DCMTK storescp, Orthanc, pynetdicom (< 5 min),
#                  and JPEG-LS against imagecodecs (~1 min)
#   make bench-full - the whole matrix; forward, scaling, recall, query, worklist benchmarks; a 10-minute soak,
#                  and where an object's CPU goes (perf, callgrind: issue 18's Python-per-object goal)
#   make fuzz    - libFuzzer: PDU and A-ASSOCIATE-RQ decoders, header parser, JPEG-LS/HTJ2K round trip, RLE,
#                  JPEG 2000 and JPEG decoders
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUST_SOURCES := $(shell find core_rs/src -name '*.rs' -o -name '*.cpp') core_rs/build.rs \
	core_rs/Cargo.toml Cargo.toml
# HTJ2K through the system's OpenJPH (build-deps installs it): a build that cannot
# find it fails instead of quietly taking the slower pure-Rust fallback. Build the
# fallback with `make build-dev PACS_EDGE_OPENJPH=off` (core_rs/build.rs).
export PACS_EDGE_OPENJPH ?= required

.PHONY: run test lint format build-dev build-deps system-deps profile-deps bench bench-full fuzz clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip 'maturin>=1.7,<2'

# What building the Rust extension needs besides cargo: cmake and a C++ compiler,
# which build CharLS (JPEG-LS) and libjpeg-turbo from source, nasm for
# libjpeg-turbo's SIMD code, and OpenJPH with pkg-config for HTJ2K
# (docs/decisions/0015, 0021, 0035).
build-deps:
	@if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null \
		|| ! command -v nasm >/dev/null || ! command -v pkg-config >/dev/null \
		|| [ ! -e /usr/include/openjph/ojph_codestream.h ]; then \
		echo "installing cmake, g++, nasm, pkg-config and libopenjph-dev from Debian (to build CharLS, libjpeg-turbo, link OpenJPH)..."; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			cmake g++ nasm pkg-config libopenjph-dev >/dev/null; \
	fi

# Builds the Rust extension (release: the engine is only ever measured that way)
# and installs the project with its test and bench extras into .venv.
$(STAMPS)/build: $(PY) pyproject.toml $(RUST_SOURCES) | build-deps
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q -E test,bench
	@mkdir -p $(STAMPS) && touch $@

build-dev: $(STAMPS)/build

# Real peers for the tests and benchmarks, from Debian: DCMTK, Orthanc, Prometheus,
# HAProxy, openssl for the TLS tests' certificates, chromium for the console's tests.
system-deps:
	@if ! command -v storescu >/dev/null || ! command -v Orthanc >/dev/null \
		|| [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
		|| ! command -v prometheus >/dev/null || ! command -v haproxy >/dev/null \
		|| ! command -v openssl >/dev/null || ! command -v chromium >/dev/null; then \
		echo "installing DCMTK, Orthanc (+DICOMweb), Prometheus, HAProxy, openssl, chromium from Debian..."; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			dcmtk orthanc orthanc-dicomweb prometheus haproxy openssl chromium >/dev/null; \
	fi

# What bench.profile samples and counts with: perf and valgrind, from Debian.
profile-deps:
	@if ! command -v perf >/dev/null || ! command -v valgrind >/dev/null; then \
		echo "installing perf and valgrind from Debian..."; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq linux-perf valgrind >/dev/null; \
	fi

# ARGS: extra `serve` flags, e.g. make run ARGS="--http-host 0.0.0.0"
run: build-dev
	$(VENV)/bin/pacs-edge serve $(ARGS)

format: build-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	cargo fmt --all
	cargo fmt --manifest-path core_rs/fuzz/Cargo.toml

lint: build-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest core_rs._core
	cargo fmt --all -- --check
	cargo fmt --manifest-path core_rs/fuzz/Cargo.toml -- --check
	cargo clippy --all-targets -q -- -D warnings
	cargo clippy --all-targets --features python -q -- -D warnings

test: build-deps system-deps lint
	cargo test -q
	$(VENV)/bin/pytest

bench: system-deps build-dev
	$(PY) -m bench.ingest --quick
	$(PY) -m bench.codecs

bench-full: system-deps profile-deps build-dev
	$(PY) -m bench.ingest
	$(PY) -m bench.profile
	$(PY) -m bench.profile --callgrind --passes 1
	$(PY) -m bench.forward
	$(PY) -m bench.scaling
	$(PY) -m bench.soak --duration 600
	$(PY) -m bench.codecs
	$(PY) -m bench.recall
	$(PY) -m bench.query
	$(PY) -m bench.worklist
	$(PY) -m bench.retrieve

# libFuzzer on the PDU decoder, the header parser, the JPEG-LS round trip, the RLE decoder
# and the JPEG 2000 decoder
# (cargo-fuzz; RUSTC_BOOTSTRAP lets the stable toolchain take its nightly flags).
# FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 120
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cd core_rs/fuzz && for target in pdu_decoder associate_rq header_parser lossless_roundtrip rle_decoder j2k_decoder jpeg_decoder; do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	rm -rf $(STAMPS) target var
