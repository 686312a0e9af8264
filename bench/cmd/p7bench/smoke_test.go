package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
)

// TestSmoke runs the whole benchmark at a tiny size, one round, so that
// `make test` (and so CI) keeps the harness working. Timings are not checked:
// only that every measurement ran and every correctness check held.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds p7bundle, crane and oras and runs registries")
	}
	root := repoRoot()
	tools := os.Getenv("P7BUNDLE_TOOLS_BIN")
	if tools == "" {
		tools = filepath.Join(root, ".cache", "tools", "bin")
	}
	if _, err := os.Stat(filepath.Join(tools, "cosign")); err != nil {
		t.Fatalf("cosign not in %s: run \"make test-deps\"", tools)
	}
	ensureTool(t, root, tools, "crane", "github.com/google/go-containerregistry/cmd/crane", "CRANE_VERSION", "v0.22.1")
	ensureTool(t, root, tools, "oras", "oras.land/oras/cmd/oras", "ORAS_VERSION", "v1.3.6")

	bin := filepath.Join(t.TempDir(), "p7bundle")
	build := exec.Command("go", "build", "-o", bin, "./cmd/p7bundle")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/p7bundle: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out := t.TempDir()
	res, err := Run(ctx, Config{Size: 32 << 20, RSSSize: 48 << 20, Runs: 1, Seed: 1, Bin: bin, Tools: tools,
		Workloads: []workload.Kind{workload.Raw, workload.Gzip}, WAN: WAN{Size: 16 << 20, RateBit: 1e9, RTT: 5 * time.Millisecond},
		Hauler: os.Getenv("HAULER"), // a local peer binary, when there is one
		Out:    out, Work: filepath.Join(t.TempDir(), "work"), Log: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("%s: check %q failed: %s", c.Workload, c.Name, c.Detail)
		}
	}
	if len(res.Workloads) != 2 {
		t.Fatalf("%d workloads, want raw and gzip", len(res.Workloads))
	}
	for _, wl := range res.Workloads {
		for _, step := range []string{"build.p7bundle", "build.script", "build.floor.zstd", "install.p7bundle", "reinstall.p7bundle",
			"install.script", "install.ceiling.raw-x4", "install.floor.zstd-d", "verify.p7bundle", "verify.script",
			"split.build.p7bundle", "split.join.p7bundle", "split.join.script",
			"second.build.p7bundle", "second.install.p7bundle", "second.verify.p7bundle",
			"monthly.build.full", "monthly.build.delta", "monthly.install.full", "monthly.install.delta"} {
			m := res.get(wl.Name + "/" + step)
			if m == nil || len(m.Samples) != 1 || m.Samples[0].Wall <= 0 {
				t.Errorf("measurement %s/%s missing or empty: %+v", wl.Name, step, m)
			}
		}
		if mo := wl.Monthly; mo == nil || mo.ChangedImages == 0 || mo.DeltaBundleBytes == 0 || mo.DeltaBundleBytes >= mo.FullBundleBytes {
			t.Errorf("%s: monthly %+v: the differential bundle must be smaller than the full one", wl.Name, mo)
		}
		if w := wl.Main; w == nil || w.Images != 30 || w.BundleBytes == 0 || w.RandomFraction < 0.3 || w.RandomFraction > 0.7 {
			t.Errorf("%s: workload %+v", wl.Name, w)
		}
		if sp := wl.Split; sp == nil || !sp.Identical || sp.Parts < 2 {
			t.Errorf("%s: split %+v: want ≥ 2 parts joining into the unsplit bundle", wl.Name, sp)
		}
		var n int
		for _, tg := range res.Targets {
			if tg.Workload == wl.Name {
				n++
			}
		}
		want := 10 // build, install, install vs ceiling, re-install, verify, 2 monthly, peak RSS, extra disk, split + join
		if wl.Name == string(workload.Gzip) {
			want++ // the WAN build
			for _, step := range []string{"wan.build.p7bundle", "wan.build.script", "wan.floor.transfer"} {
				if m := res.get(wl.Name + "/" + step); m == nil || len(m.Samples) != 1 || m.Samples[0].Wall <= 0 {
					t.Errorf("measurement %s/%s missing or empty: %+v", wl.Name, step, m)
				}
			}
			if wan := wl.WAN; wan == nil || wan.P7Bytes < wan.Bytes || wan.FloorSeconds <= 0 {
				t.Errorf("WAN summary %+v: p7bundle's build must pull at least the workload's bytes through the link", wan)
			}
		}
		if os.Getenv("HAULER") != "" {
			want++ // build vs Hauler
		}
		if n != want {
			t.Errorf("%s: %d targets, want %d", wl.Name, n, want)
		}
	}
	// The same layer content (configs and manifests differ a little: media types).
	raw, gz := res.Workloads[0].Main, res.Workloads[1].Main
	if d := gz.ContentBytes - raw.ContentBytes; res.Workloads[1].LayerMediaType != "application/vnd.oci.image.layer.v1.tar+gzip" ||
		d < 0 || d > 16<<10 || gz.UniqueBytes >= raw.UniqueBytes || raw.ContentBytes != raw.UniqueBytes {
		t.Errorf("gzip workload %+v (%s), raw %+v: want the raw content, compressed", gz, res.Workloads[1].LayerMediaType, raw)
	}
	if len(res.Pairs) < 20 {
		t.Errorf("%d pairs, want ≥ 10 per workload", len(res.Pairs))
	}
	md, err := os.ReadFile(filepath.Join(out, "latest.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Targets", "| target | goal | raw | gzip |", "| build |", "| install |", "| install vs ingest ceiling |",
		"| re-install |", "| verify |", "| peak RSS |", "| extra disk during install |", "| split + join |",
		"| differential bundle size |", "| differential install |", "raw, monthly scenario", "gzip, monthly scenario", "gzip, split",
		"## Every measurement: gzip workload", "| WAN build |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("latest.md lacks %q", want)
		}
	}
	var back Result
	raw2, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err == nil {
		err = json.Unmarshal(raw2, &back)
	}
	if err != nil || len(back.Measurements) != len(res.Measurements) || len(back.Workloads) != 2 {
		t.Errorf("latest.json does not round-trip: %v", err)
	}
}

// ensureTool installs a Go tool into dir unless it is there, at the version
// the Makefile pins (variable makeVar), like `make bench-deps` does.
func ensureTool(t *testing.T, root, dir, name, module, makeVar, fallback string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
		return
	}
	version := fallback
	if mk, err := os.ReadFile(filepath.Join(root, "Makefile")); err == nil {
		if m := regexp.MustCompile(`(?m)^` + makeVar + `\s*:?=\s*(\S+)`).FindSubmatch(mk); m != nil {
			version = string(m[1])
		}
	}
	t.Logf("installing %s@%s into %s", module, version, dir)
	cmd := exec.Command("go", "install", module+"@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s@%s: %v\n%s", module, version, err, out)
	}
	os.WriteFile(filepath.Join(dir, name+"-"+version), nil, 0o644)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
