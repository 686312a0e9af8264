package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/internal/testing/fixture"
)

// TestSplitBundle: build --split-size writes parts that cat back into the
// unsplit build byte for byte; verify, inspect and push take any part or
// the whole set; join writes the single file; a missing part or one of
// another build is refused and tags nothing.
func TestSplitBundle(t *testing.T) {
	s := startSite(t)
	// One 20 MB image of random text, so the bundle needs several parts.
	text := make([]byte, 15<<20)
	rand.New(rand.NewSource(7)).Read(text)
	if _, err := fixture.PushImages(context.Background(), fixture.Options{
		Registry: s.up.Host, Username: s.up.Username, Password: s.up.Password, CAFile: s.up.CAFile,
		Variants: map[string]string{"pseven-big": base64.StdEncoding.EncodeToString(text)},
	}, []string{"pseven-big:1"}); err != nil {
		t.Fatal(err)
	}
	big := "registry.pseven.io/pseven-big:1"
	whole := filepath.Join(s.dir, "whole.tar.zst")
	if r := s.build(t, whole, "--image", big); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	split := filepath.Join(s.dir, "split", "pseven.tar.zst")
	os.MkdirAll(filepath.Dir(split), 0o755)
	r := s.build(t, split, "--image", big, "--split-size", "8Mi")
	if r.code != 0 {
		t.Fatalf("build --split-size: %v", r)
	}
	parts, _ := filepath.Glob(split + ".0*")
	if len(parts) < 3 {
		t.Fatalf("%d parts: %v\n%s", len(parts), parts, r.stderr)
	}
	var joined []byte
	for _, p := range parts {
		b := mustRead(t, p)
		if len(b) > 8<<20 {
			t.Errorf("%s: %d bytes, over the split size", p, len(b))
		}
		joined = append(joined, b...)
	}
	if !bytes.Equal(joined, mustRead(t, whole)) {
		t.Fatal("the parts concatenated differ from the unsplit build")
	}
	if r := p7(t, "", "verify", parts[0], "--key", s.pub); r.code != 0 || !strings.Contains(r.stdout, "Verified OK") {
		t.Errorf("verify first part: %v", r)
	}
	reordered := append([]string{"verify", "--key", s.pub}, parts[2], parts[0], parts[1])
	if r := p7(t, "", reordered...); r.code != 0 {
		t.Errorf("verify the set, reordered: %v", r)
	}
	if r := p7(t, "", "inspect", split+".parts.json"); r.code != 0 || !strings.Contains(r.stdout, "pseven-big") {
		t.Errorf("inspect parts.json: %v", r)
	}
	out := filepath.Join(s.dir, "joined.tar.zst")
	if r := p7(t, "", "join", parts[1], "-o", out); r.code != 0 {
		t.Fatalf("join: %v", r)
	}
	if !bytes.Equal(mustRead(t, out), mustRead(t, whole)) {
		t.Error("join output differs from the unsplit build")
	}
	if r := p7(t, "", "join", parts[1], "-o", out); r.code != exitOutput || !strings.Contains(r.stderr, "--force replaces it") {
		t.Errorf("join over an existing file: %v", r)
	}
	if r := p7(t, "", "join", parts[1], "-o", out, "--force"); r.code != 0 || !bytes.Equal(mustRead(t, out), mustRead(t, whole)) {
		t.Errorf("join --force: %v", r)
	}
	reg := startSiteRegistry(t)
	if r := p7(t, reg.Password+"\n", pushArgs(reg, parts[1], s.pub)...); r.code != 0 {
		t.Fatalf("push from the second part: %v", r)
	}
	tags := len(allTags(t, reg))

	// A part of another build (same image, other chart content) and a missing part.
	other := filepath.Join(s.dir, "other", "pseven.tar.zst")
	os.MkdirAll(filepath.Dir(other), 0o755)
	if r := s.build(t, other, "--image", big, "--exclude", "registry.pseven.io/pseven-files:6.47.4712", "--split-size", "8Mi"); r.code != 0 {
		t.Fatalf("build other: %v", r)
	}
	// The other build's parts that differ from ours (the big layer's may not).
	var foreign []int
	for i, p := range parts {
		if b, err := os.ReadFile(other + p[len(p)-4:]); err == nil && !bytes.Equal(b, mustRead(t, p)) {
			foreign = append(foreign, i)
		}
	}
	if len(foreign) == 0 {
		t.Fatal("the other build's parts are all equal to ours")
	}
	reg2 := startSiteRegistry(t)
	for _, c := range []struct {
		name string
		part int
		bad  func(p string) error
	}{
		{"first part of another build", foreign[0], func(p string) error { return os.WriteFile(p, mustRead(t, other+p[len(p)-4:]), 0o644) }},
		{"last part of another build", foreign[len(foreign)-1], func(p string) error { return os.WriteFile(p, mustRead(t, other+p[len(p)-4:]), 0o644) }},
		{"missing part", 1, os.Remove},
	} {
		name := c.name
		good := mustRead(t, parts[c.part])
		if err := c.bad(parts[c.part]); err != nil {
			t.Fatal(err)
		}
		if r := p7(t, "", "verify", parts[0], "--key", s.pub); r.code == 0 || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: verify: %v", name, r)
		} else {
			t.Logf("%s: %s", name, strings.TrimSpace(r.stderr))
		}
		if r := p7(t, reg2.Password+"\n", pushArgs(reg2, parts[0], s.pub)...); r.code == 0 {
			t.Errorf("%s: push: %v", name, r)
		}
		os.WriteFile(parts[c.part], good, 0o644)
	}
	if n := len(allTags(t, reg2)); n != 0 {
		t.Errorf("bad part sets left %d tags", n)
	}
	t.Logf("%d parts, cat = unsplit build, join = unsplit sha256; pushed %d tags from a part", len(parts), tags)

	// Transfer systems rename files: the signatures bind digests, so a set
	// renamed whole, or a parts list renamed without its parts, verifies.
	renamed := filepath.Join(s.dir, "diode", "transfer-0042.bin")
	os.MkdirAll(filepath.Dir(renamed), 0o755)
	sidecars, _ := filepath.Glob(split + ".*")
	for _, f := range sidecars {
		copyFile(t, f, renamed+strings.TrimPrefix(f, split))
	}
	if r := p7(t, "", "verify", renamed+".002", "--key", s.pub); r.code != 0 || !strings.Contains(r.stdout, "note: transfer-0042.bin was built as pseven.tar.zst") {
		t.Errorf("verify the renamed set: %v", r)
	}
	listOnly := filepath.Join(filepath.Dir(split), "ticket-17.tar.zst")
	copyFile(t, split+".parts.json", listOnly+".parts.json")
	copyFile(t, split+".parts.json.sig", listOnly+".parts.json.sig")
	copyFile(t, split+".sig", listOnly+".sig")
	if r := p7(t, "", "verify", listOnly+".parts.json", "--key", s.pub); r.code != 0 {
		t.Errorf("verify a renamed parts list beside the parts: %v", r)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, mustRead(t, from), 0o644); err != nil {
		t.Fatal(err)
	}
}
