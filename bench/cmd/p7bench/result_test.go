package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
)

// The report puts the workloads side by side and, beside v1-latest.json
// (format v1's results, the raw workload only), compares with it.
func TestReportSideBySideAndV1(t *testing.T) {
	r := &Result{Size: 2 << 30, Seed: 1, Runs: 1}
	walls := map[string]float64{
		"build.p7bundle": 10, "build.script": 20, "build.floor.zstd": 4,
		"install.p7bundle": 8, "install.script": 20, "install.ceiling.raw-x4": 7.5, "install.floor.zstd-d": 1.5,
		"reinstall.p7bundle": 0.1, "verify.p7bundle": 2, "verify.script.openssl": 1.5, "verify.script": 9,
		"split.build.p7bundle": 10.5, "split.join.p7bundle": 2, "split.join.script": 1.8,
	}
	for i, k := range workload.Kinds {
		wl := r.workload(k)
		wl.Main = &WorkloadSummary{Images: 30, UniqueBytes: 2 << 30, ContentBytes: 2 << 30, BundleBytes: 1 << 30}
		wl.Split = &SplitSummary{SplitSize: 256 << 20, Parts: 4, LargestPart: 256 << 20, Bytes: 1 << 30, Identical: true}
		for step, wall := range walls {
			r.measurement(string(k) + "/" + step).Samples = []Sample{{Wall: wall * float64(i+1), MaxRSSKiB: 100 << 10}}
		}
	}
	r.measurement("gzip/build.p7bundle").Samples[0].Wall = 30 // a miss for gzip only
	r.finish(time.Minute)

	dir := t.TempDir()
	v1, err := os.ReadFile(filepath.Join(repoRoot(), "bench", "results", "v1-latest.json"))
	if err != nil {
		t.Skip("no bench/results/v1-latest.json")
	}
	os.WriteFile(filepath.Join(dir, "v1-latest.json"), v1, 0o644)
	os.WriteFile(filepath.Join(dir, "v1-latest.md"), []byte("# v1\n"), 0o644)
	if err := r.write(dir); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "latest.md"))
	for _, want := range []string{
		"| target | goal | raw | gzip |",
		"| build | ≤ 0.60× crane pull + tar \\| zstd -T0 -3 + sha256sum | **PASS** 0.50× | **MISS** 0.75× |",
		"| install vs ingest ceiling | ≤ 1.15× the registry's raw ingest | **PASS** 1.07× | **PASS** 1.07× |",
		"| re-install | ≤ 0.02× first install | **PASS** 0.01× |",
		"| split + join |", "joined sha256 = unsplit sha256",
		"[v1-latest.md](v1-latest.md)", "## Compared with format v1",
		"| p7bundle build | 16.54 s | 10.00 s | 0.60× | 30.00 s |",
		"| ratio: build | 1.06× | 0.50× |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("latest.md lacks %q", want)
		}
	}
	if t.Failed() || os.Getenv("SHOW") != "" {
		t.Log(string(md))
	}
	if err := rerender(filepath.Join(dir, "v1-latest.json")); err == nil {
		t.Error("rerender of a v1 latest.json must refuse")
	}
	if err := rerender(filepath.Join(dir, "latest.json")); err != nil {
		t.Errorf("rerender: %v", err)
	}
}
