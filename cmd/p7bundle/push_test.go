package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/mirror"
)

func startSiteRegistry(t *testing.T) *testregistry.Registry {
	t.Helper()
	reg, err := testregistry.Start(context.Background(), testregistry.Options{Username: "site-admin", Password: "site-pa55-" + t.Name()[:4], TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	return reg
}

func pushArgs(reg *testregistry.Registry, bundlePath, pub string, extra ...string) []string {
	return append([]string{"push", bundlePath, "--key", pub, "--registry", reg.Host, "--ca-file", reg.CAFile,
		"--registry-username", reg.Username, "--registry-password-stdin"}, extra...)
}

// allTags lists repository:tag for everything in the registry.
func allTags(t *testing.T, reg *testregistry.Registry) []string {
	t.Helper()
	tags, err := reg.AllTags(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

func TestPush(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "b.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	var m bundle.Manifest
	if err := json.Unmarshal([]byte(p7(t, "", "inspect", out, "--json").stdout), &m); err != nil {
		t.Fatal(err)
	}
	reg := startSiteRegistry(t)

	t.Run("tampered bundle tags nothing", func(t *testing.T) {
		bad := filepath.Join(s.dir, "tampered.tar.zst")
		data, _ := os.ReadFile(out)
		data[len(data)/2] ^= 0x04
		os.WriteFile(bad, data, 0o644)
		sig, _ := os.ReadFile(out + ".sig")
		os.WriteFile(bad+".sig", sig, 0o644)
		r := p7(t, reg.Password+"\n", pushArgs(reg, bad, s.pub)...)
		if r.code != exitVerify {
			t.Fatalf("push of a tampered bundle: %v", r)
		}
		if tags := allTags(t, reg); len(tags) != 0 {
			t.Fatalf("tampered bundle left tags %v", tags)
		}
	})

	r := p7(t, reg.Password+"\n", pushArgs(reg, out, s.pub, "--json")...)
	if r.code != 0 {
		t.Fatalf("push: %v", r)
	}
	if strings.Contains(r.stdout+r.stderr, reg.Password) {
		t.Error("registry password in output")
	}
	var res mirror.PushResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.BlobsPushed == 0 || res.BlobsMounted == 0 || len(res.Images) != len(m.Images) {
		t.Errorf("first push: %+v", res)
	}
	// Into an empty registry each blob is read from the file once and
	// uploaded once; the images sharing it mount it.
	var unique int64
	for _, b := range m.Blobs {
		if !b.Omitted && !bundle.IsManifest(b.MediaType) && !bundle.IsIndex(b.MediaType) {
			unique += b.Size
		}
	}
	if res.BytesRead != unique || res.BytesPushed != unique || res.Retried != 0 {
		t.Errorf("first push read %d bytes and uploaded %d; the bundle's blobs are %d bytes, each to be read and uploaded once", res.BytesRead, res.BytesPushed, unique)
	}
	// Each image is at HOST/pseven/<name>:<tag> with the bundle's digest.
	client, err := mirror.NewClient(mirror.RegistryOptions{CAFile: reg.CAFile, Username: reg.Username, Password: reg.Password})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, img := range m.Images {
		target := siteRef(reg.Host, img.Ref)
		want = append(want, strings.TrimPrefix(target, reg.Host+"/"))
		if err := resolveDigest(client, target, img.Digest.String()); err != nil {
			t.Error(err)
		}
	}
	sort.Strings(want)
	if got := allTags(t, reg); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("registry tags:\n %v\nwant\n %v", got, want)
	}

	t.Run("values and lint", func(t *testing.T) {
		siteFlags := []string{"--registry", reg.Host, "--ca-file", reg.CAFile, "--registry-username", reg.Username, "--registry-password-stdin"}
		vf := filepath.Join(s.dir, "values.airgap.yaml")
		r := p7(t, reg.Password+"\n", append([]string{"values", out, "--key", s.pub, "-o", vf}, siteFlags...)...)
		if r.code != 0 {
			t.Fatalf("values: %v", r)
		}
		st, err := os.Stat(vf)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("values file: %v %v", st, err)
		}
		doc, _ := os.ReadFile(vf)
		if !strings.Contains(string(doc), "url: "+reg.Host+"/pseven") || strings.Contains(r.stdout+r.stderr, reg.Password) {
			t.Errorf("values.airgap.yaml:\n%s", doc)
		}
		lint := func(extra ...string) result {
			return p7(t, reg.Password+"\n", append(append([]string{"lint", out}, siteFlags...), extra...)...)
		}
		if r := lint(); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("air-gap lint passed: %d images", templateImages(manifestOf(t, out)))) {
			t.Errorf("lint after push: %v", r)
		}
		if r := lint("--set", "image.files=quay.io/evil/files:1"); r.code != exitLint || !strings.Contains(r.stderr, "quay.io/evil/files:1 (pseven/templates/files.yaml DaemonSet/pseven-rl-files container files)") {
			t.Errorf("lint with an outside image: %v", r)
		}
		var rep struct {
			Images    []map[string]any `json:"images"`
			Offenders []map[string]any `json:"offenders"`
		}
		if r := lint("--set", "image.files=quay.io/evil/files:1", "--json"); r.code != exitLint || json.Unmarshal([]byte(r.stdout), &rep) != nil ||
			len(rep.Offenders) != 1 || rep.Offenders[0]["what"] != "quay.io/evil/files:1" || rep.Images[0]["ref"] == nil {
			t.Errorf("lint --json (camelCase keys): %v", r)
		}
		empty := startSiteRegistry(t)
		r = p7(t, empty.Password+"\n", "lint", out, "--registry", empty.Host, "--ca-file", empty.CAFile, "--registry-username", empty.Username, "--registry-password-stdin")
		if r.code != exitLint || !strings.Contains(r.stdout, "missing from the site registry") {
			t.Errorf("lint against an empty registry: %v", r)
		}
	})

	t.Run("second push uploads nothing", func(t *testing.T) {
		r := p7(t, reg.Password+"\n", pushArgs(reg, out, s.pub, "--json")...)
		var again mirror.PushResult
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &again) != nil {
			t.Fatalf("second push: %v", r)
		}
		if again.BlobsPushed != 0 || again.BytesPushed != 0 || again.BlobsMounted != 0 {
			t.Errorf("second push did work: %+v", again)
		}
	})

	t.Run("root prefix", func(t *testing.T) {
		reg2 := startSiteRegistry(t)
		if r := p7(t, reg2.Password+"\n", pushArgs(reg2, out, s.pub, "--registry-prefix", "")...); r.code != 0 {
			t.Fatalf("push: %v", r)
		}
		tags := allTags(t, reg2)
		if want := len(manifestOf(t, out).Images); len(tags) < want {
			t.Errorf("prefix \"\": %d tags for %d images: %v", len(tags), want, tags)
		}
		for _, tag := range tags {
			if strings.HasPrefix(tag, "pseven/") {
				t.Errorf("prefix \"\" still used pseven/: %s", tag)
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		if r := p7(t, "wrong\n", pushArgs(reg, out, s.pub)...); r.code != exitRegistry || !strings.Contains(r.stderr, reg.Host) {
			t.Errorf("wrong registry password: %v", r)
		}
		args := pushArgs(reg, out, s.pub)
		args = append(args[:2], args[4:]...) // drop --key
		if r := p7(t, reg.Password+"\n", args...); r.code != exitKey || !strings.Contains(r.stderr, "--key") {
			t.Errorf("push without --key: %v", r)
		}
	})
}

// templateImages counts the bundle's images found in the chart's
// templates: what the rendered release runs.
func templateImages(m *bundle.Manifest) int {
	n := 0
	for _, img := range m.Images {
		if slices.ContainsFunc(img.Sources, func(s string) bool { return strings.HasPrefix(s, "template:") }) {
			n++
		}
	}
	return n
}
