package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

// export: an OCI layout stock oras reads with the bundle's digests, a
// docker archive skopeo reads with the images' configs; nothing left at
// the path when it fails.
func TestExport(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	m := manifestOf(t, out)
	oras, err := testenv.Tool("oras")
	if err != nil {
		t.Fatal(err)
	}
	tool := func(name string, args ...string) []byte {
		t.Helper()
		b, err := exec.Command(name, args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, stderr)
		}
		return b
	}

	layout := filepath.Join(s.dir, "layout")
	if r := p7(t, "", "export", out, "--key", s.pub, "--oci-layout", layout, "--json"); r.code != 0 || !strings.Contains(r.stdout, `"format": "oci-layout"`) {
		t.Fatalf("export --oci-layout: %v", r)
	}
	for _, img := range m.Images {
		var desc struct{ Digest string }
		json.Unmarshal(tool(oras, "manifest", "fetch", "--oci-layout-path", layout, "--descriptor", img.Ref), &desc)
		if desc.Digest != img.Digest.String() {
			t.Errorf("oras reads %s from the layout as %s, bundle %s", img.Ref, desc.Digest, img.Digest)
		}
	}
	if r := p7(t, "", "export", out, "--key", s.pub, "--oci-layout", layout); r.code != exitOutput {
		t.Errorf("export over an existing layout: %v", r)
	}

	img := m.ContainerImages()[0]
	short := strings.TrimPrefix(img.Ref, m.SourceRegistry+"/")
	tarFile := filepath.Join(s.dir, "images.tar")
	if r := p7(t, "", "export", out, "--key", s.pub, "--docker-archive", "-o", tarFile, "--image", short); r.code != 0 {
		t.Fatalf("export --docker-archive: %v", r)
	}
	raw := tool("skopeo", "inspect", "--raw", "docker-archive:"+tarFile+":"+img.Ref)
	var dm struct {
		Config struct{ Digest digest.Digest }
	}
	json.Unmarshal(raw, &dm)
	cfg := tool("skopeo", "inspect", "--config", "--raw", "docker-archive:"+tarFile+":"+img.Ref)
	if want := configDigest(t, out, img); dm.Config.Digest != want || digest.FromBytes(cfg) != want {
		t.Errorf("docker archive %s: config %s (bytes %s), bundle %s", img.Ref, dm.Config.Digest, digest.FromBytes(cfg), want)
	}

	if r := p7(t, "", "export", out, "--key", s.pub, "--docker-archive", "-o", filepath.Join(s.dir, "x.tar"), "--image", "nosuch:1"); r.code != exitInput || !strings.Contains(r.stderr, "nosuch:1") {
		t.Errorf("unknown image: %v", r)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "x.tar")); !os.IsNotExist(err) {
		t.Errorf("a failed export left x.tar")
	}
	if r := p7(t, "", "export", out, "--key", s.pub, "--docker-archive", "--image", short); r.code != exitUsage {
		t.Errorf("--docker-archive without -o: %v", r)
	}
}

// configDigest is the config of img (of its first manifest, for an index).
func configDigest(t *testing.T, path string, img bundle.Image) digest.Digest {
	t.Helper()
	a, err := bundle.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	meta, err := a.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Config    struct{ Digest digest.Digest }
		Manifests []struct{ Digest digest.Digest }
	}
	json.Unmarshal(meta[img.Digest], &doc)
	if len(doc.Manifests) > 0 {
		json.Unmarshal(meta[doc.Manifests[0].Digest], &doc)
	}
	return doc.Config.Digest
}
