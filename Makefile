# p7bundle. Two commands set up and run everything on a fresh machine:
#   make demo   build the fixture bundle and verify it
#   make test   everything CI runs
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/p7bundle/p7bundle/internal/version.Version=$(VERSION) -X github.com/p7bundle/p7bundle/internal/version.Commit=$(COMMIT)
TOOLS_BIN := $(CURDIR)/.cache/tools/bin
COSIGN_VERSION := v2.6.5
CRANE_VERSION := v0.22.1
ORAS_VERSION := v1.3.6
HELM_VERSION := v3.22.0
DISTRIBUTION_VERSION := v3.1.2
DEB_PACKAGES := docker-registry skopeo zstd openssl time \
	containerd runc etcd-server iptables conntrack containernetworking-plugins ethtool socat iproute2 util-linux
export P7BUNDLE_TOOLS_BIN := $(TOOLS_BIN)

.PHONY: build probe test test-deps site-deps k8s-binaries vault-binary demo vet clean fuzz faults man release release-binaries

build: probe
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/p7bundle ./cmd/p7bundle

# The site probe every bundle carries (internal/probeimage embeds it): static,
# without paths, VCS stamps or build IDs, so the same source gives the same image.
PROBE_DIR := internal/probeimage/embedded
PROBE_SRC := $(shell find cmd/p7bundle-probe internal/probe -name '*.go' ! -name '*_test.go') go.mod
probe: $(PROBE_DIR)/p7bundle-probe-linux-amd64 $(PROBE_DIR)/p7bundle-probe-linux-arm64

$(PROBE_DIR)/p7bundle-probe-linux-%: $(PROBE_SRC)
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o $@.tmp ./cmd/p7bundle-probe
	@mv $@.tmp $@

# Idempotent: installs only missing Debian packages, builds tools only once per version.
# The demo needs the site (Debian packages, Kubernetes) but not the Vault the tests use.
test-deps: site-deps vault-binary $(TOOLS_BIN)/registry-$(DISTRIBUTION_VERSION)

# distribution v3 (the CNCF registry) beside Debian's 2.8: make test runs the
# push suite on it too.
$(TOOLS_BIN)/registry-$(DISTRIBUTION_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) GOFLAGS=-mod=mod CGO_ENABLED=0 $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION)
	@touch $@

site-deps: $(TOOLS_BIN)/cosign-$(COSIGN_VERSION) $(TOOLS_BIN)/crane-$(CRANE_VERSION) $(TOOLS_BIN)/oras-$(ORAS_VERSION) $(TOOLS_BIN)/helm-$(HELM_VERSION) k8s-binaries
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The stock Helm CLI admins run beside p7bundle (helm history, rollback, get values).
$(TOOLS_BIN)/helm-$(HELM_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) GOFLAGS=-mod=mod $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@touch $@

$(TOOLS_BIN)/cosign-$(COSIGN_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) GOFLAGS=-mod=mod $(GO) install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)
	@touch $@

# Kubernetes binaries for internal/testing/testsite, cached in .cache/k8s/<version>/bin
# (a no-op when present; 6-8 minutes cold on 2 cores for each version): the
# current one (tools/k8s), v1.25.2, the one the vendor tested (tools/k8s-1.25),
# v1.24.17, the oldest whose module builds as it is (tools/k8s-1.24), and v1.22.16,
# the oldest the vendor supports (tools/k8s-1.22: build.sh generates its OpenAPI code).
k8s-binaries:
	tools/k8s/build.sh tools/k8s
	tools/k8s/build.sh tools/k8s-1.25
	tools/k8s/build.sh tools/k8s-1.24
	tools/k8s/build.sh tools/k8s-1.22

# Vault dev server for internal/testing/testvault, in $(TOOLS_BIN)
# (a no-op when present; about 14 minutes cold on 2 cores).
vault-binary:
	tools/vault/build.sh

vet: probe
	$(GO) vet ./...

# The registry suite: push, differential push, vendor signatures, tamper,
# token auth and redirects, run again on distribution v3.
REGISTRY_SUITE := ^(TestPush|TestDifferentialBundle|TestVendorImageSignatures|TestTamperedBundleNeverTagged|TestRegistryDelegations)$$

# Again on go-containerregistry's registry, which serves the OCI 1.1
# referrers API (vendor signatures take that path) and keeps one blob store
# for all repositories (TestPush counts mounts, which that makes moot).
REFERRERS_SUITE := ^(TestDifferentialBundle|TestVendorImageSignatures|TestTamperedBundleNeverTagged)$$

test: test-deps probe vet
	$(GO) test -race -count=1 -timeout 40m ./...
	P7BUNDLE_TEST_REGISTRY_BINARY=$(TOOLS_BIN)/registry $(GO) test -race -count=1 -timeout 20m -run '$(REGISTRY_SUITE)' ./cmd/p7bundle
	$(GO) build -o $(TOOLS_BIN)/ggcr-registry ./internal/testing/ggcrregistry
	P7BUNDLE_TEST_REGISTRY_BINARY=$(TOOLS_BIN)/ggcr-registry P7BUNDLE_TEST_REGISTRY_REFERRERS_API=1 \
		$(GO) test -race -count=1 -timeout 20m -run '$(REFERRERS_SUITE)' ./cmd/p7bundle
	$(MAKE) fuzz FUZZTIME=10s

# The fault and tamper suite at 5x the trials CI runs, plus longer fuzzing.
faults: test-deps probe
	P7BUNDLE_FAULT_SCALE=5 $(GO) test -count=1 -timeout 60m -v \
		-run 'Tamper|Flaky|Crash|ResourceFaults|ZeroEgress|Hostile|Reject' ./bundle ./cmd/p7bundle
	$(MAKE) fuzz FUZZTIME=1m

# Fuzz the archive reader and the manifest parser; CI runs a short smoke.
# Go 1.26's coordinator can fail a target with a bare "context deadline
# exceeded" as -fuzztime ends (go.dev/issue/75804, fixed in Go 1.27): with
# no failing input written, that target is run once more; anything else fails.
FUZZTIME ?= 2m
FUZZ_TARGETS := FuzzReader FuzzReaderTar FuzzDecodeManifest
fuzz:
	@for f in $(FUZZ_TARGETS); do \
		for try in 1 2; do \
			echo "fuzz $$f for $(FUZZTIME)"; \
			out=$$($(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) ./bundle 2>&1); rc=$$?; echo "$$out"; \
			[ $$rc = 0 ] && break; \
			if [ $$try = 1 ] && grep -q 'context deadline exceeded' <<<"$$out" && ! grep -q 'Failing input written' <<<"$$out"; then \
				echo "fuzz $$f: the -fuzztime deadline race of Go 1.26 (go.dev/issue/75804), no failing input: once more"; continue; \
			fi; \
			exit 1; \
		done; \
	done

# A release a site can check with stock tools (README "Verifying a p7bundle release"):
# static, byte-reproducible binaries, SHA256SUMS, its cosign signature and a signed
# SLSA provenance. make release VERSION=1.2.3 RELEASE_KEY=release.key (or a KMS URI;
# the key password from $$COSIGN_PASSWORD).
RELEASE_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
RELEASE_DIR ?= dist
release:
	@test -n "$(RELEASE_KEY)" || { echo "make release needs RELEASE_KEY=FILE|KMS-URI" >&2; exit 2; }
	@case "$(VERSION)" in dev|*-dirty|"") echo "make release needs VERSION=x.y.z from a clean tree (got '$(VERSION)')" >&2; exit 2;; esac
	rm -rf $(RELEASE_DIR) && mkdir -p $(RELEASE_DIR)
	$(MAKE) release-binaries
	$(GO) run ./cmd/p7bundle-release --dir $(RELEASE_DIR) --key '$(RELEASE_KEY)' --version '$(VERSION)' \
		--commit "$$(git rev-parse HEAD)" --platforms '$(RELEASE_PLATFORMS)'

# The release's binaries alone; TestReleaseBinariesAreReproducible builds them twice.
release-binaries: probe
	@mkdir -p $(RELEASE_DIR)
	@for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "build $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false \
			-ldflags '-s -w -buildid= -X github.com/p7bundle/p7bundle/internal/version.Version=$(VERSION) -X github.com/p7bundle/p7bundle/internal/version.Commit=$(COMMIT)' \
			-o $(RELEASE_DIR)/p7bundle-$(VERSION)-$$os-$$arch$$ext ./cmd/p7bundle || exit 1; \
	done

# docs/CLI.md and docs/p7bundle.1 from the command definitions (make test fails when stale).
man:
	$(GO) test -count=1 -run '^Test(CLI|JSON)DocsAreCurrent$$' ./cmd/p7bundle -update-docs

demo: site-deps build
	$(GO) run ./internal/testing/demo --bin bin/p7bundle

clean:
	rm -rf bin .cache

# Benchmark (issue 6): p7bundle against crane/tar/zstd/oras/openssl/cosign on a generated
# workload; writes bench/results/latest.{md,json}. See bench/README.md.
BENCH_SIZE ?= 2G
BENCH_DEB_PACKAGES := docker-registry zstd openssl time iproute2
.PHONY: bench bench-smoke bench-serve bench-profile bench-deps

bench: bench-deps build
	$(GO) run ./bench/cmd/p7bench --bin bin/p7bundle --size $(BENCH_SIZE) --out bench/results

# One round at 64M (CI runs the same harness at 32M through TestSmoke in `make test`).
bench-smoke: bench-deps build
	$(GO) run ./bench/cmd/p7bench --bin bin/p7bundle --size 64M --rss-size 128M --runs 1 --out .cache/bench/smoke

# serve vs docker-registry serving the same blobs (bench/results/serve.md).
SERVE_BENCH_SIZE ?= 2G
bench-serve: bench-deps build
	$(GO) run ./bench/cmd/p7serve --bin bin/p7bundle --size $(SERVE_BENCH_SIZE) --out bench/results/serve.md

bench-profile: bench-deps probe
	$(GO) run ./bench/cmd/p7prof --size $(BENCH_SIZE) --out .cache/bench/profile

bench-deps: $(TOOLS_BIN)/cosign-$(COSIGN_VERSION) $(TOOLS_BIN)/crane-$(CRANE_VERSION) $(TOOLS_BIN)/oras-$(ORAS_VERSION)
	@missing=""; for p in $(BENCH_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(TOOLS_BIN)/crane-$(CRANE_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) GOFLAGS=-mod=mod CGO_ENABLED=0 $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
	@touch $@

$(TOOLS_BIN)/oras-$(ORAS_VERSION):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) GOFLAGS=-mod=mod CGO_ENABLED=0 $(GO) install oras.land/oras/cmd/oras@$(ORAS_VERSION)
	@touch $@
