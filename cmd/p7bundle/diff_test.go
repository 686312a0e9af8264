package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/mirror"
)

// diff tells an admin what next month's bundle changes before choosing
// what to burn to media; it works on exported manifests too.
func TestDiffOfTwoMonths(t *testing.T) {
	s := startSite(t)
	v1, v2chart := monthPair(t, s)
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
	if strings.Join(changed, ",") != want || len(d.Added) != 1 || d.Added[0].ToRef != "registry.pseven.io/pseven-newcomponent:6.48.5000" ||
		len(d.Removed) != 0 || len(d.Unchanged) != 9 { // 8 images and the probe
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
			oldBlobs[string(b)] = true
		}
	}
	sizes := map[string]int64{}
	for _, b := range m2.Blobs {
		sizes[b.Digest.String()] = b.Size
	}
	var newBytes int64
	newBlobs := 0
	for _, img := range m2.Images {
		for _, c := range d.Changed {
			if img.Ref == c.ToRef {
				for _, b := range img.Blobs {
					if !oldBlobs[string(b)] {
						newBlobs++
						newBytes += sizes[string(b)]
					}
				}
			}
		}
	}
	// The added image brings its component layer, config and manifest.
	for _, img := range m2.Images {
		if img.Ref == d.Added[0].ToRef {
			for _, b := range img.Blobs {
				if !oldBlobs[string(b)] {
					newBlobs++
					newBytes += sizes[string(b)]
				}
			}
		}
	}
	if newBlobs != 9 || d.NewBlobs != 9 || d.NewBytes != newBytes || d.FullBytes != m2.Totals.BlobBytes || d.SharedBytes+d.NewBytes != d.FullBytes {
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
	text := strings.Join(strings.Fields(p7(t, "", "diff", v1, v2).stdout), " ")
	for _, want := range []string{"Chart: pseven 2023.09.25 (6.47.4712) -> pseven 2023.10.30 (6.48.5000)",
		"changed registry.pseven.io/pseven-edgerouter 6.47.4712 -> 6.48.5000", "Unchanged: 9 images (6 re-tagged, same digest)", "Blobs: 9 new",
		"added registry.pseven.io/pseven-newcomponent - -> 6.48.5000"} {
		if !strings.Contains(text, want) {
			t.Errorf("diff output lacks %q:\n%s", want, text)
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

// monthPair builds last month's bundle and this month's chart and images
// (two components changed, the others re-tagged).
func monthPair(t *testing.T, s *site) (v1, v2chart string) {
	t.Helper()
	v1 = filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, v1); r.code != 0 {
		t.Fatalf("build v1: %v", r)
	}
	v2chart = nextMonthChart(t, filepath.Join(s.dir, "chart-v2"))
	if _, err := s.up.PushRelease(context.Background(), v2chart, map[string]string{"pseven-app": "2023.10.30", "pseven-edgerouter": "2023.10.30"}); err != nil {
		t.Fatal(err)
	}
	return v1, v2chart
}

func carried(m *bundle.Manifest) []string {
	var out []string
	for _, b := range m.Blobs {
		if !b.Omitted {
			out = append(out, b.Digest.String())
		}
	}
	sort.Strings(out)
	return out
}

// A differential bundle carries exactly what changed; at the site it
// installs only over its base, and is refused before any upload otherwise.
func TestDifferentialBundle(t *testing.T) {
	s := startSite(t)
	v1, v2chart := monthPair(t, s)
	ctx := context.Background()
	v2 := filepath.Join(s.dir, "pseven-2023.10.30.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(v2), "--chart", v2chart)...); r.code != 0 {
		t.Fatalf("build v2: %v", r)
	}
	delta := filepath.Join(s.dir, "pseven-2023.10.30-delta.tar.zst")
	r := p7(t, s.up.Password+"\n", append(s.buildArgs(delta), "--chart", v2chart, "--base", v1)...)
	if r.code != 0 || !strings.Contains(r.stderr, "differential against") {
		t.Fatalf("build delta: %v", r)
	}
	m1, m2, md := manifestOf(t, v1), manifestOf(t, v2), manifestOf(t, delta)

	for _, img := range md.Images {
		if img.Ref == md.Probe {
			continue // made by p7bundle, not pulled
		}
		upstream := img.Digest
		if img.SourceDigest != "" {
			upstream = img.SourceDigest
		}
		if s.up.Digests[img.Ref] != upstream.String() {
			t.Errorf("%s: delta digest %s, upstream %s", img.Ref, upstream, s.up.Digests[img.Ref])
		}
	}
	// Exactly the blobs of the changed images that v1 did not have.
	had := map[string]bool{}
	for _, b := range m1.Blobs {
		had[b.Digest.String()] = true
	}
	var want []string
	for _, img := range m2.Images {
		for _, b := range img.Blobs {
			if !had[string(b)] && !slices.Contains(want, string(b)) {
				want = append(want, string(b))
			}
		}
	}
	sort.Strings(want)
	if got := carried(md); len(want) != 9 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("delta carries %v, want the 9 new blobs %v", got, want)
	}
	v1digest := "sha256:" + strings.Fields(string(mustRead(t, v1+".sha256")))[0]
	if md.Base == nil || md.Base.Name != "pseven-2023.09.25.tar.zst" || md.Base.Digest != v1digest {
		t.Errorf("base = %+v", md.Base)
	}
	if st, _ := os.Stat(delta); st.Size()*4 > mustStat(t, v2).Size() {
		t.Errorf("delta is %d bytes, the full bundle %d", st.Size(), mustStat(t, v2).Size())
	}
	_, omittedBytes := md.OmittedBytes()
	t.Logf("full v2 bundle %d bytes, differential %d bytes; %d blob bytes carried, %d left to the base",
		mustStat(t, v2).Size(), mustStat(t, delta).Size(), md.Totals.BlobBytes-omittedBytes, omittedBytes)
	if r := p7(t, "", "verify", delta, "--key", s.pub); r.code != 0 || !strings.Contains(r.stdout, "differential: 28 blobs") {
		t.Errorf("verify delta: %v", r)
	}
	if r := p7(t, "", "inspect", delta); !strings.Contains(r.stdout, "Base:       pseven-2023.09.25.tar.zst") {
		t.Errorf("inspect delta: %v", r)
	}
	// From an exported manifest: the same blobs left out.
	exported := filepath.Join(s.dir, "v1.json")
	os.WriteFile(exported, []byte(p7(t, "", "inspect", v1, "--manifest").stdout), 0o644)
	delta2 := filepath.Join(s.dir, "delta-from-manifest.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(delta2), "--chart", v2chart, "--base", exported)...); r.code != 0 {
		t.Fatalf("build delta from a manifest: %v", r)
	}
	if got := carried(manifestOf(t, delta2)); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("delta from the exported manifest carries %v", got)
	}

	// Bases chain: on top of the delta, the same release carries nothing,
	// as the delta's omitted blobs count as at the site too.
	chained := filepath.Join(s.dir, "chained.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(chained), "--chart", v2chart, "--base", delta)...); r.code != 0 {
		t.Fatalf("build on the delta: %v", r)
	}
	if got := carried(manifestOf(t, chained)); len(got) != 0 {
		t.Errorf("a bundle on top of the delta of the same release carries %v", got)
	}

	reg := startSiteRegistry(t)
	// Into an empty registry: refused before any upload, naming the base.
	r = p7(t, reg.Password+"\n", pushArgs(reg, delta, s.pub)...)
	if r.code != exitRegistry || !strings.Contains(r.stderr, "install pseven-2023.09.25.tar.zst first") || !strings.Contains(r.stderr, "28 blobs") {
		t.Errorf("delta into an empty registry: %v", r)
	}
	if repos, _ := reg.Catalog(ctx); len(repos) != 0 {
		t.Errorf("something was uploaded: %v", repos)
	}
	// A delta built against a lying base (it claims a blob v1 never had)
	// is stopped by the same check.
	var lying bundle.Manifest
	json.Unmarshal(mustRead(t, exported), &lying)
	for _, b := range m2.Blobs {
		if b.Digest.String() == want[0] {
			lying.Blobs = append(lying.Blobs, b)
		}
	}
	lying.Normalize()
	lb, _ := lying.Encode()
	os.WriteFile(exported, lb, 0o644)
	bad := filepath.Join(s.dir, "delta-bad-base.tar.zst")
	if r := p7(t, s.up.Password+"\n", append(s.buildArgs(bad), "--chart", v2chart, "--base", exported)...); r.code != 0 {
		t.Fatalf("build against the lying base: %v", r)
	}

	// Over v1: complete, every v2 image as upstream has it.
	if r := p7(t, reg.Password+"\n", pushArgs(reg, v1, s.pub)...); r.code != 0 {
		t.Fatalf("push v1: %v", r)
	}
	before := allTags(t, reg)
	if r := p7(t, reg.Password+"\n", pushArgs(reg, bad, s.pub)...); r.code != exitRegistry || !strings.Contains(r.stderr, "lacks them") {
		t.Errorf("delta against a lying base: %v", r)
	}
	if after := allTags(t, reg); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("the refused delta tagged %v", after)
	}
	started := time.Now()
	r = p7(t, reg.Password+"\n", pushArgs(reg, delta, s.pub, "--json")...)
	if r.code != 0 {
		t.Fatalf("push delta over v1: %v", r)
	}
	t.Logf("push of the differential bundle over v1: %v", time.Since(started).Round(time.Millisecond))
	assertPulls(t, reg, m2)

	// At an empty site with the base bundle at hand: the base is pushed
	// first, then the delta; a bundle that is not its base is refused.
	fresh := startSiteRegistry(t)
	if r := p7(t, fresh.Password+"\n", pushArgs(fresh, delta, s.pub, "--base", v2)...); r.code != exitInput || !strings.Contains(r.stderr, "is not the base of") {
		t.Errorf("wrong --base: %v", r)
	}
	if repos, _ := fresh.Catalog(ctx); len(repos) != 0 {
		t.Errorf("a wrong base uploaded %v", repos)
	}
	if r := p7(t, fresh.Password+"\n", pushArgs(fresh, delta, s.pub, "--base", v1)...); r.code != 0 || !strings.Contains(r.stderr, "pushing the base") {
		t.Fatalf("delta with --base at an empty site: %v", r)
	}
	assertPulls(t, fresh, m2)
}

// assertPulls pulls every image of m from the site registry, whole graph,
// and checks its digest against the bundle and upstream.
func assertPulls(t *testing.T, reg *testregistry.Registry, m *bundle.Manifest) {
	t.Helper()
	ctx := context.Background()
	client, err := mirror.NewClient(mirror.RegistryOptions{CAFile: reg.CAFile, Username: reg.Username, Password: reg.Password})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range m.Images {
		ref := siteRef(reg.Host, img.Ref)
		pr, err := registry.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		repo, err := client.Repository(pr)
		if err != nil {
			t.Fatal(err)
		}
		// The whole graph pulls: every blob is linked into the repository.
		desc, err := oras.Copy(ctx, repo, pr.Reference, memory.New(), "", oras.DefaultCopyOptions)
		if err != nil || desc.Digest != img.Digest {
			t.Errorf("pull %s: %v, %v (want %s)", ref, desc.Digest, err, img.Digest)
		}
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
