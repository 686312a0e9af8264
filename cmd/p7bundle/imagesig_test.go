package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// cosignAt runs the stock cosign CLI against registries it trusts and
// logs in to through a private docker config (no ~/.docker).
type cosignAt struct {
	t      *testing.T
	bin    string
	env    []string
	config map[string]any
	dir    string
}

func newCosign(t *testing.T, dir string, cas ...string) *cosignAt {
	bin, err := testenv.Tool("cosign")
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, "ca.pem")
	var pem []byte
	for _, ca := range cas {
		b, err := os.ReadFile(ca)
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, b...)
	}
	os.WriteFile(certs, pem, 0o644)
	c := &cosignAt{t: t, bin: bin, dir: dir, config: map[string]any{}}
	c.env = append(os.Environ(), "DOCKER_CONFIG="+dir, "SSL_CERT_FILE="+certs, "COSIGN_PASSWORD="+testKeyPassword,
		"TUF_ROOT="+filepath.Join(dir, "tuf"), "SIGSTORE_NO_CACHE=true")
	return c
}

func (c *cosignAt) login(reg *testregistry.Registry) {
	c.config[reg.Host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))}
	b, _ := json.Marshal(map[string]any{"auths": c.config})
	if err := os.WriteFile(filepath.Join(c.dir, "config.json"), b, 0o600); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cosignAt) run(args ...string) (string, error) {
	cmd := exec.Command(c.bin, args...)
	cmd.Dir, cmd.Env = c.dir, c.env
	b, err := cmd.CombinedOutput()
	return string(b), err
}

func (c *cosignAt) must(args ...string) {
	c.t.Helper()
	if out, err := c.run(args...); err != nil {
		c.t.Fatalf("cosign %v: %v\n%s", args, err, out)
	}
}

// Vendor signatures: build refuses an image its key did not sign (naming
// it), carries the signatures it finds, and push copies them, so stock
// `cosign verify` works against the site registry.
func TestVendorImageSignatures(t *testing.T) {
	s := startSite(t)
	if r := p7(t, "", "keygen", "--output-prefix", filepath.Join(s.dir, "vendor")); r.code != 0 {
		t.Fatal(r)
	}
	if r := p7(t, "", "keygen", "--output-prefix", filepath.Join(s.dir, "impostor")); r.code != 0 {
		t.Fatal(r)
	}
	vendorKey, vendorPub := filepath.Join(s.dir, "vendor.key"), filepath.Join(s.dir, "vendor.pub")
	impostorPub := filepath.Join(s.dir, "impostor.pub")
	reg := startSiteRegistry(t)
	cs := newCosign(t, t.TempDir(), s.up.CAFile, reg.CAFile)
	cs.login(s.up.Registry)
	cs.login(reg)

	upstream := func(ref string) string {
		return s.up.Host + strings.TrimPrefix(strings.SplitN(ref, ":", 2)[0], manifests.DefaultSourceRegistry) + "@" + s.up.Digests[ref]
	}
	sign := func(ref string, recursive bool) {
		args := []string{"sign", "--yes", "--tlog-upload=false", "--key", vendorKey}
		if recursive {
			args = append(args, "--recursive")
		}
		cs.must(append(args, upstream(ref))...)
	}
	var unsigned, indexOnly string
	for _, img := range s.up.Images {
		switch {
		case strings.Contains(img.Ref, "memcached"):
			unsigned = img.Ref
		case strings.Contains(img.Ref, "/"+testenv.MultiPlatformRepo+":"):
			indexOnly = img.Ref
			sign(img.Ref, false) // the index only: its amd64 manifest has no signature of its own
		default:
			sign(img.Ref, true)
		}
	}
	if unsigned == "" || indexOnly == "" {
		t.Fatalf("fixture has no memcached or %s image: %v", testenv.MultiPlatformRepo, s.up.Images)
	}

	out := filepath.Join(s.dir, "signed.tar.zst")
	r := s.build(t, out, "--verify-images-key", vendorPub)
	if r.code != exitVerify || !strings.Contains(lastLine(r.stderr), unsigned) {
		t.Fatalf("build of an unsigned image with --verify-images-key: %v", r)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused build left %s", out)
	}
	// This one as an OCI 1.1 referrer (the upstream registry has no
	// referrers API: cosign writes the sha256-<hex> tag index instead).
	referrerSigned := unsigned
	cs.env = append(cs.env, "COSIGN_EXPERIMENTAL=1")
	cs.must("sign", "--yes", "--tlog-upload=false", "--key", vendorKey, "--registry-referrers-mode=oci-1-1", upstream(unsigned))

	// The index signature vouches for the manifest filtered out of it.
	if r := s.build(t, out, "--verify-images-key", vendorPub); r.code != 0 {
		t.Fatalf("build with every image signed: %v", r)
	}
	m := readManifest(t, out)
	if got, want := signaturesCarried(m), len(s.up.Images)-1; got != want {
		t.Fatalf("bundle carries the signatures of %d images, want %d (all but the index-only one)", got, want)
	}

	if r := s.build(t, filepath.Join(s.dir, "impostor.tar.zst"), "--verify-images-key", impostorPub); r.code != exitVerify || !strings.Contains(r.stderr, "not signed by the --verify-images-key key") {
		t.Fatalf("build verified against another key: %v", r)
	}

	// Signed recursively, the amd64 manifest's own signature travels too.
	sign(indexOnly, true)
	os.Remove(out)
	if r := s.build(t, out, "--verify-images-key", vendorPub); r.code != 0 {
		t.Fatalf("rebuild: %v", r)
	}
	m = readManifest(t, out)
	if got := signaturesCarried(m); got != len(s.up.Images) {
		t.Fatalf("bundle carries %d signatures, want %d", got, len(s.up.Images))
	}
	// Without the flag the signatures are carried all the same.
	plain := filepath.Join(s.dir, "plain.tar.zst")
	if r := s.build(t, plain); r.code != 0 || signaturesCarried(readManifest(t, plain)) != len(s.up.Images) {
		t.Fatalf("build without --verify-images-key: %v", r)
	}

	if r := p7(t, reg.Password+"\n", pushArgs(reg, out, s.pub)...); r.code != 0 {
		t.Fatalf("push: %v", r)
	}
	// At the site, by digest, with stock cosign: every image verifies with
	// the vendor's key and none with another.
	verified := 0
	for _, img := range m.Images {
		if img.Signs != "" || img.Ref == m.Probe { // the probe is p7bundle's, not the vendor's
			continue
		}
		verified++
		path := strings.TrimPrefix(strings.SplitN(strings.SplitN(img.Ref, "@", 2)[0], ":", 2)[0], manifests.DefaultSourceRegistry+"/")
		at := fmt.Sprintf("%s/pseven/%s@%s", reg.Host, path, img.Digest)
		args := []string{"verify", "--insecure-ignore-tlog"}
		if img.Ref == referrerSigned {
			args = append(args, "--experimental-oci11")
		}
		cs.must(append(args, "--key", vendorPub, at)...)
		if out, err := cs.run(append(args, "--key", impostorPub, at)...); err == nil {
			t.Fatalf("cosign verify with another key passed for %s:\n%s", at, out)
		}
	}
	if verified != len(s.up.Images) {
		t.Fatalf("cosign verified %d images at the site, want %d", verified, len(s.up.Images))
	}
	// And straight from the bundle, through serve: the .sig tags and the
	// referrers API (the OCI 1.1 signature) as a registry serves them.
	srv := startServe(t, out, "--key", s.pub, "--addr", "127.0.0.1:0")
	for _, img := range m.Images {
		if img.Signs != "" || img.Ref == m.Probe {
			continue
		}
		path := strings.TrimPrefix(strings.SplitN(strings.SplitN(img.Ref, "@", 2)[0], ":", 2)[0], manifests.DefaultSourceRegistry+"/")
		at := fmt.Sprintf("%s/pseven/%s@%s", srv.addr, path, img.Digest)
		args := []string{"verify", "--insecure-ignore-tlog", "--allow-http-registry"}
		if img.Ref == referrerSigned {
			args = append(args, "--experimental-oci11")
		}
		cs.must(append(args, "--key", vendorPub, at)...)
		if out, err := cs.run(append(args, "--key", impostorPub, at)...); err == nil {
			t.Fatalf("cosign verify with another key passed for %s (served):\n%s", at, out)
		}
	}

	// The OCI 1.1 signature, at both ends: listed by the referrers API
	// where the registry serves it (go-containerregistry's, in make test),
	// else under the sha256-<hex> tag that stands in for it (distribution).
	var signed bundle.Image
	for _, img := range m.Images {
		if img.Ref == referrerSigned {
			signed = img
		}
	}
	path := strings.TrimPrefix(strings.SplitN(referrerSigned, ":", 2)[0], manifests.DefaultSourceRegistry+"/")
	for _, end := range []struct {
		reg  *testregistry.Registry
		repo string
	}{{s.up.Registry, path}, {reg, "pseven/" + path}} {
		types, err := end.reg.Referrers(context.Background(), end.repo, signed.Digest.String())
		switch {
		case errors.Is(err, testregistry.ErrNoReferrersAPI):
			if os.Getenv(testregistry.ReferrersAPIEnv) == "1" {
				t.Fatalf("%s/%s: %v, but %s=1", end.reg.Host, end.repo, err, testregistry.ReferrersAPIEnv)
			}
			tags, err := end.reg.Tags(context.Background(), end.repo)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Replace(signed.Digest.String(), ":", "-", 1); !slices.Contains(tags, want) {
				t.Errorf("%s/%s has no referrers API and no %s tag: %v", end.reg.Host, end.repo, want, tags)
			}
			t.Logf("%s/%s: OCI 1.1 signature under the referrers tag schema", end.reg.Host, end.repo)
		case err != nil:
			t.Fatal(err)
		case !slices.Contains(types, mirror.CosignSignatureArtifactType):
			t.Errorf("referrers of %s/%s@%s: %v, want a %s", end.reg.Host, end.repo, signed.Digest, types, mirror.CosignSignatureArtifactType)
		default:
			t.Logf("%s/%s: OCI 1.1 signature listed by the referrers API", end.reg.Host, end.repo)
		}
	}
}

func readManifest(t *testing.T, path string) *bundle.Manifest {
	t.Helper()
	m, err := bundle.ReadManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// signaturesCarried counts the images whose signatures the bundle holds.
func signaturesCarried(m *bundle.Manifest) int {
	signs := map[string]bool{}
	for _, img := range m.Images {
		if img.Signs != "" {
			signs[img.Signs.String()] = true
		}
	}
	n := 0
	for _, img := range m.Images {
		if img.Signs == "" && signs[img.Digest.String()] {
			n++
		}
	}
	return n
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
