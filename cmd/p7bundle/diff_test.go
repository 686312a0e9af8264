package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/bundle"
)

// diff tells an admin what next month's bundle changes before choosing
// what to burn to media; it works on exported manifests too.
func TestDiffOfTwoMonths(t *testing.T) {
	s := startSite(t)
	v1 := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, v1); r.code != 0 {
		t.Fatalf("build v1: %v", r)
	}
	v2chart := nextMonthChart(t, filepath.Join(s.dir, "chart-v2"))
	if _, err := s.up.PushRelease(context.Background(), v2chart, map[string]string{"pseven-app": "2023.10.30", "pseven-edgerouter": "2023.10.30"}); err != nil {
		t.Fatal(err)
	}
	v2 := filepath.Join(s.dir, "pseven-2023.10.30.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(v2), "--chart", v2chart)...); r.code != 0 {
		t.Fatalf("build v2: %v", r)
	}

	r := p7(t, "", "diff", v1, v2, "--json")
	if r.code != 0 {
		t.Fatalf("diff: %v", r)
	}
	var d bundle.Diff
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatal(err)
	}
	var changed []string
	for _, c := range d.Changed {
		changed = append(changed, c.FromRef+" -> "+c.ToRef)
	}
	want := "registry.pseven.io/pseven-app:6.47.4712 -> registry.pseven.io/pseven-app:6.48.5000," +
		"registry.pseven.io/pseven-edgerouter:6.47.4712 -> registry.pseven.io/pseven-edgerouter:6.48.5000"
	if strings.Join(changed, ",") != want || len(d.Added) != 0 || len(d.Removed) != 0 || len(d.Unchanged) != 8 {
		t.Errorf("diff: changed %q, added %v, removed %v, %d unchanged", changed, d.Added, d.Removed, len(d.Unchanged))
	}
	if d.Old.Version != "2023.09.25" || d.New.AppVersion != "6.48.5000" {
		t.Errorf("charts: %+v -> %+v", d.Old, d.New)
	}
	// Each changed fixture image differs in its component layer, config and
	// manifest; the binary layer and every re-tagged image are shared.
	m1, m2 := manifestOf(t, v1), manifestOf(t, v2)
	oldBlobs := map[string]bool{}
	for _, img := range m1.Images {
		for _, b := range img.Blobs {
			oldBlobs[b] = true
		}
	}
	sizes := map[string]int64{}
	for _, b := range m2.Blobs {
		sizes[b.Digest] = b.Size
	}
	var newBytes int64
	newBlobs := 0
	for _, img := range m2.Images {
		for _, c := range d.Changed {
			if img.Ref == c.ToRef {
				for _, b := range img.Blobs {
					if !oldBlobs[b] {
						newBlobs++
						newBytes += sizes[b]
					}
				}
			}
		}
	}
	if newBlobs != 6 || d.NewBlobs != 6 || d.NewBytes != newBytes || d.FullBytes != m2.Totals.BlobBytes || d.SharedBytes+d.NewBytes != d.FullBytes {
		t.Errorf("blobs: diff says %d new (%d B), %d shared (%d B), full %d B; the changed images bring %d new (%d B)",
			d.NewBlobs, d.NewBytes, d.SharedBlobs, d.SharedBytes, d.FullBytes, newBlobs, newBytes)
	}

	// The same from an exported manifest: the old bundle need not be kept.
	exported := filepath.Join(s.dir, "old.json")
	if r := p7(t, "", "inspect", v1, "--manifest"); r.code != 0 {
		t.Fatalf("inspect --manifest: %v", r)
	} else {
		os.WriteFile(exported, []byte(r.stdout), 0o644)
	}
	if r2 := p7(t, "", "diff", exported, v2, "--json"); r2.code != 0 || r2.stdout != r.stdout {
		t.Errorf("diff from the exported manifest differs: %v", r2)
	}
	text := p7(t, "", "diff", v1, v2)
	for _, want := range []string{"Chart:      pseven 2023.09.25 (6.47.4712) -> pseven 2023.10.30 (6.48.5000)",
		"changed  registry.pseven.io/pseven-edgerouter  6.47.4712 -> 6.48.5000", "Unchanged:  8 images (6 re-tagged, same digest)", "Blobs:      6 new"} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("diff output lacks %q:\n%s", want, text.stdout)
		}
	}
	if r := p7(t, "", "diff", v1); r.code != exitUsage {
		t.Errorf("one argument: %v", r)
	}
	if r := p7(t, "", "diff", v1, filepath.Join(s.dir, "missing.tar.zst")); r.code != exitInput || !strings.Contains(r.stderr, "missing.tar.zst") {
		t.Errorf("missing bundle: %v", r)
	}
}

func manifestOf(t *testing.T, path string) *bundle.Manifest {
	t.Helper()
	m, err := bundle.LoadManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
