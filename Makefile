# xtbpf build. A fresh machine has only Go and gcc: `deps` installs the rest.
SHELL := /bin/bash
GO ?= go
BIN := bin
APT_PKGS := iptables clang llvm libbpf-dev bpftool netsniff-ng iproute2 iperf3 iputils-ping ufw fail2ban
NEED_CMDS := iptables-legacy clang llvm-strip bpftool trafgen ip ping ufw fail2ban-client
# policy-rc.d keeps the services of ufw and fail2ban from starting: they
# would change the firewall of the machine's own namespace.
# iptables-persistent conflicts with ufw, so tests/distro runs its plugins
# from the unpacked packages instead of installing them.
NFP_DIR := /var/cache/xtbpf/netfilter-persistent
PREFIX ?= /usr

.PHONY: all deps build generate test fuzz demo bench clean install FORCE

all: build

deps:
	@missing=0; for c in $(NEED_CMDS); do command -v $$c >/dev/null || missing=1; done; \
	[ -f /usr/include/bpf/bpf_helpers.h ] || missing=1; \
	if [ $$missing = 1 ]; then \
		echo "installing $(APT_PKGS)"; \
		guard=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; guard=1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; rc=$$?; \
		[ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; [ $$rc = 0 ]; \
	fi
	@[ -x $(NFP_DIR)/usr/sbin/netfilter-persistent ] || { \
		d=$$(mktemp -d) && chmod 755 $$d && (cd $$d && apt-get download -qq netfilter-persistent iptables-persistent) && \
		mkdir -p $(NFP_DIR) && for f in $$d/*.deb; do dpkg-deb -x $$f $(NFP_DIR); done; rm -rf $$d; }

build: $(BIN)/xtbpfd $(BIN)/xtbpf $(BIN)/libxtbpf.so

$(BIN)/xtbpfd: FORCE
	$(GO) build -o $@ ./cmd/xtbpfd

$(BIN)/xtbpf: FORCE
	$(GO) build -o $@ ./cmd/xtbpf

$(BIN)/libxtbpf.so: kmod/shim.c kmod/wire.h
	@mkdir -p $(BIN)
	gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o $@ kmod/shim.c -ldl

# Regenerates the bpf2go loaders; their .go and .o are committed so that
# `go build` needs no clang.
generate:
	cd bpf && $(GO) generate ./...

FORCE:

# Root-needing tests skip without root elsewhere; here they must run.
TEST_ENV := XTBPF_REQUIRE_ROOT=1
# Run on their own, after the rest: they compare token buckets with the
# kernel's packet by packet, which needs each burst to reach both sides
# within one jiffy, and a machine busy with other tests rarely allows it.
ALONE := ./tests/ratelimit
FUZZTIME ?= 100000x

test: deps build
	$(GO) vet ./...
	$(TEST_ENV) $(GO) test -count=1 -timeout 28m -p 2 $$($(GO) list ./... | grep -v $(ALONE))
	$(TEST_ENV) $(GO) test -count=1 -timeout 10m $(ALONE)
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME)

# Every fuzz target, briefly (make fuzz FUZZTIME=10m for a long run). The
# default is a count, not a duration: Go 1.26's fuzz coordinator can report a
# spurious "context deadline exceeded" when a wall-clock -fuzztime ends
# (golang/go#75804), which failed a clean-clone CI run with no failing input.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; \
			out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg 2>&1) || { echo "$$out"; exit 1; }; \
		done; \
	done

demo: deps build
	scripts/demo.sh

# Side-by-side numbers for iptables-legacy, iptables-nft and xtbpf, in scratch
# namespaces (~12 min; BENCH_FLAGS=--quick for a few).
BENCH_FLAGS ?=
bench: deps build
	$(BIN)/xtbpf bench --out docs/benchmarks.md $(BENCH_FLAGS)

# DESTDIR stages the install (absolute path); the alternatives are then
# registered inside it, never on this host.
install: build
	$(BIN)/xtbpf install --prefix $(PREFIX) --root $(or $(DESTDIR),/)

clean:
	rm -rf $(BIN)
