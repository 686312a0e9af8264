package builder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/probeimage"
	"github.com/p7bundle/p7bundle/internal/testing/randimage"
	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// These run Build against a docker-registry upstream behind a proxy that
// counts requests; the CLI tests in cmd/p7bundle add faults and auth.

var chartDir = filepath.Join("..", "testdata", "charts", "pseven")

type upstream struct {
	Host     string       // the counting proxy in front of the registry
	Requests atomic.Int64 // requests that reached the upstream
	// Corrupt, when set, flips a byte in the middle of every layer (gzip)
	// the upstream serves: a registry (or a path to it) that lies.
	Corrupt  atomic.Bool
	Flipped  atomic.Int64
	registry *testregistry.Registry
	digests  map[string]string
	key, pub string
	password []byte
	dir      string
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	reg, err := testregistry.Start(context.Background(), testregistry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	dir := t.TempDir()
	u := &upstream{registry: reg, password: []byte("builder-test"), dir: dir}
	if u.digests, err = randimage.PushChart(reg.Host, chartDir); err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(reg.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if u.Corrupt.Load() && resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.ContentLength > 2 {
			resp.Body = &flipReader{ReadCloser: resp.Body, at: resp.ContentLength / 2, flipped: &u.Flipped}
		}
		return nil
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.Requests.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	u.Host = strings.TrimPrefix(front.URL, "http://")
	if u.key, u.pub, err = bundle.GenerateKeyPair(filepath.Join(dir, "cosign"), u.password); err != nil {
		t.Fatal(err)
	}
	return u
}

// flipReader flips the lowest bit of the byte at offset at of a gzip
// stream (a layer; configs and manifests pass untouched).
type flipReader struct {
	io.ReadCloser
	off, at int64
	gzip    bool
	flipped *atomic.Int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if f.off == 0 && n > 0 {
		f.gzip = p[0] == 0x1f
	}
	if f.gzip && f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 1
		f.flipped.Add(1)
	}
	f.off += int64(n)
	return n, err
}

// build is `p7bundle build --mirror registry.pseven.io=UPSTREAM`.
func (u *upstream) build(out string, edit func(*Build)) (*Result, error) {
	b := &Build{
		Chart: chartDir, Output: out, KeyPath: u.key, KeyPassword: u.password, ToolVersion: "test",
		Created:  time.Unix(1700000000, 0),
		Registry: mirror.RegistryOptions{Mirrors: map[string]string{manifests.DefaultSourceRegistry: u.Host}, PlainHTTP: true},
	}
	if edit != nil {
		edit(b)
	}
	return b.Run(context.Background())
}

func TestBuildCarriesEveryImageSignedAndReproducibly(t *testing.T) {
	u := newUpstream(t)
	first := filepath.Join(u.dir, "a.tar.zst")
	res, err := u.build(first, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	if len(m.Images) != len(u.digests)+1 {
		t.Errorf("bundle has %d images, upstream %d plus the probe", len(m.Images), len(u.digests))
	}
	probe, err := probeimage.Build([]string{"linux/amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Probe != probeimage.Ref("test") {
		t.Errorf("probe = %q", m.Probe)
	}
	for _, img := range m.Images {
		if img.Ref == m.Probe {
			if img.Digest != probe.Root.Digest || len(img.Blobs) != 3 {
				t.Errorf("probe image %s with %d blobs, want %s with 3", img.Digest, len(img.Blobs), probe.Root.Digest)
			}
			continue
		}
		if want := u.digests[img.Ref]; img.Digest.String() != want {
			t.Errorf("%s: digest %s, upstream %s", img.Ref, img.Digest, want)
		}
	}
	if m.Secretgen == "" || u.digests[m.Secretgen] == "" {
		t.Errorf("secretgen %q not bundled", m.Secretgen)
	}
	v, err := bundle.LoadVerifier(context.Background(), u.pub)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := bundle.Verify(context.Background(), first, bundle.VerifyOptions{Verifier: v})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.BlobsChecked != int64(len(m.Blobs)) {
		t.Errorf("verify checked %d of %d blobs", rep.BlobsChecked, len(m.Blobs))
	}
	// Same inputs, same bytes: with a 1-image-at-a-time pull this time.
	second := filepath.Join(u.dir, "b.tar.zst")
	if _, err := u.build(second, func(b *Build) { b.Jobs = 1 }); err != nil {
		t.Fatal(err)
	}
	if a, b := mustRead(t, first), mustRead(t, second); !bytes.Equal(a, b) {
		t.Errorf("two builds differ: %d and %d bytes", len(a), len(b))
	}
}

// A wrong key password or an unwritable output fails before any pull.
func TestBuildFailsBeforePulling(t *testing.T) {
	u := newUpstream(t)
	before := u.Requests.Load()
	_, err := u.build(filepath.Join(u.dir, "x.tar.zst"), func(b *Build) { b.KeyPassword = []byte("wrong") })
	if !errors.Is(err, bundle.ErrKey) {
		t.Errorf("wrong key password: %v", err)
	}
	_, err = u.build(filepath.Join(u.dir, "missing", "x.tar.zst"), nil)
	if err == nil {
		t.Error("built into a missing directory")
	}
	if n := u.Requests.Load() - before; n != 0 {
		t.Errorf("%d registry requests before failing", n)
	}
	if entries, _ := os.ReadDir(u.dir); len(entries) != 2 { // the key pair
		t.Errorf("files left behind: %v", entries)
	}
}

func TestBuildDifferentialOmitsTheBase(t *testing.T) {
	u := newUpstream(t)
	full := filepath.Join(u.dir, "full.tar.zst")
	if _, err := u.build(full, nil); err != nil {
		t.Fatal(err)
	}
	// One image changes; a differential build carries only its blobs.
	var changed string
	for ref := range u.digests {
		if ref != "" {
			changed = ref
			break
		}
	}
	if _, err := randimage.Push(u.registry.Host, strings.TrimPrefix(changed, manifests.DefaultSourceRegistry+"/"), 512); err != nil {
		t.Fatal(err)
	}
	res, err := u.build(filepath.Join(u.dir, "delta.tar.zst"), func(b *Build) { b.Base = full })
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	if m.Base == nil || m.Base.Name == "" {
		t.Fatalf("no base recorded: %+v", m.Base)
	}
	n, _ := m.OmittedBytes()
	if carried := len(m.Blobs) - n; carried == 0 || carried > 3 {
		t.Errorf("differential carries %d of %d blobs; one changed image has 3 (manifest, config, layer)", carried, len(m.Blobs))
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBuildRefusesBlobsThatAreNotTheirDigest: an upstream that serves a
// layer whose bytes do not hash to its digest fails the build, streamed
// (no --cache-dir) or through the cache, and leaves nothing at the output.
func TestBuildRefusesBlobsThatAreNotTheirDigest(t *testing.T) {
	u := newUpstream(t)
	u.Corrupt.Store(true)
	for _, cached := range []bool{false, true} {
		t.Run(map[bool]string{false: "streamed", true: "cache-dir"}[cached], func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.tar.zst")
			before := u.Flipped.Load()
			_, err := u.build(out, func(b *Build) {
				if cached {
					b.CacheDir = filepath.Join(t.TempDir(), "cache")
				}
			})
			if err == nil || !strings.Contains(err.Error(), "digest") {
				t.Fatalf("build from a lying upstream (%d blobs flipped): %v, want a digest error", u.Flipped.Load()-before, err)
			}
			if u.Flipped.Load() == before {
				t.Fatal("no blob was corrupted: the test proves nothing")
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				t.Errorf("left in the output directory: %s", e.Name())
			}
			t.Logf("%v", err)
		})
	}
}
