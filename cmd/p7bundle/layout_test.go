package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

// What docs/FORMAT.md says stock tools do with the extracted oci/ layout,
// run: oras and crane read it whatever the manifests' media types; skopeo
// reads OCI-typed images and not Docker-typed ones (skopeo #1975).
func TestExtractedLayoutTools(t *testing.T) {
	s := startSite(t)
	// A Docker-typed image, as docker push writes them (the fixture's are OCI).
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(s.up.Host + "/pseven-docker:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithTransport(s.up.HTTPClient().Transport),
		remote.WithAuth(&authn.Basic{Username: s.up.Username, Password: s.up.Password})); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(s.dir, "b.tar.zst")
	if r := s.build(t, out, "--image", "registry.pseven.io/pseven-docker:1"); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	dir := filepath.Join(s.dir, "x")
	os.MkdirAll(dir, 0o755)
	if b, err := exec.Command("sh", "-c", `zstd -dc "$1" | tar -x -C "$2"`, "sh", out, dir).CombinedOutput(); err != nil {
		t.Fatalf("zstd -d | tar -x: %v\n%s", err, b)
	}
	layout := filepath.Join(dir, "oci")
	var index struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(mustRead(t, filepath.Join(layout, "index.json")), &index); err != nil {
		t.Fatal(err)
	}
	digestOf := map[string]string{}
	for _, m := range index.Manifests {
		digestOf[m.Annotations["org.opencontainers.image.ref.name"]] = m.Digest
	}
	ociRef, dockerRef := "registry.pseven.io/pseven-keycloak:6.47.4712", "registry.pseven.io/pseven-docker:1"
	if digestOf[ociRef] == "" || digestOf[dockerRef] == "" {
		t.Fatalf("index.json lacks %s or %s: %v", ociRef, dockerRef, digestOf)
	}
	tool := func(name string, args ...string) (string, error) {
		path := name
		if name != "skopeo" {
			var err error
			if path, err = testenv.Tool(name); err != nil {
				t.Fatal(err)
			}
		}
		b, err := exec.Command(path, args...).CombinedOutput()
		return string(b), err
	}
	for _, r := range []string{ociRef, dockerRef} {
		// oras: one image, by digest.
		got, err := tool("oras", "manifest", "fetch", "--oci-layout", layout+"@"+digestOf[r])
		if err != nil || fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(got))) != digestOf[r] {
			t.Errorf("oras manifest fetch %s: %v\n%.300s", r, err, got)
		}
		if out, err := tool("oras", "cp", "--from-oci-layout", layout+"@"+digestOf[r], "--to-oci-layout", filepath.Join(s.dir, "copy")+":x"); err != nil {
			t.Errorf("oras cp %s: %v\n%s", r, err, out)
		}
	}
	// skopeo: the OCI-typed image by its reference name; not the Docker-typed one.
	if out, err := tool("skopeo", "inspect", "--raw", "oci:"+layout+":"+ociRef); err != nil {
		t.Errorf("skopeo inspect %s: %v\n%s", ociRef, err, out)
	}
	if out, err := tool("skopeo", "inspect", "oci:"+layout+":"+dockerRef); err == nil {
		t.Errorf("skopeo read a Docker-typed manifest from the layout: docs/FORMAT.md says it cannot; update it\n%s", out)
	} else {
		t.Logf("skopeo, Docker-typed: %s", strings.TrimSpace(out))
	}
	// crane: every image at once, as one index in one repository.
	reg := startSiteRegistry(t)
	cfg := filepath.Join(s.dir, "docker")
	os.MkdirAll(cfg, 0o700)
	crane, _ := testenv.Tool("crane")
	login := exec.Command(crane, "auth", "login", reg.Host, "-u", reg.Username, "--password-stdin")
	login.Env = append(os.Environ(), "DOCKER_CONFIG="+cfg, "SSL_CERT_FILE="+reg.CAFile)
	login.Stdin = strings.NewReader(reg.Password)
	if b, err := login.CombinedOutput(); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, b)
	}
	push := exec.Command(crane, "push", "--index", layout, reg.Host+"/pseven/all:1")
	push.Env = login.Env
	if b, err := push.CombinedOutput(); err != nil {
		t.Errorf("crane push --index: %v\n%s", err, b)
	}
	tags, err := reg.Tags(context.Background(), "pseven/all")
	if err != nil || len(tags) != 1 {
		t.Errorf("after crane push: tags %v, %v", tags, err)
	}
}
