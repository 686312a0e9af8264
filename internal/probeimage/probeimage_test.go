package probeimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestBuildIsReproducibleAndRunnable(t *testing.T) {
	a, err := Build([]string{"linux/amd64"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build([]string{"linux/amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Root.Digest != b.Root.Digest || a.Root.MediaType != ocispec.MediaTypeImageManifest || len(a.Blobs) != 3 {
		t.Fatalf("root %s (%s, %d blobs), again %s", a.Root.Digest, a.Root.MediaType, len(a.Blobs), b.Root.Digest)
	}
	byDigest := map[string][]byte{}
	for i, bl := range a.Blobs {
		if i > 0 && a.Blobs[i-1].Descriptor.Digest >= bl.Descriptor.Digest {
			t.Error("blobs not sorted by digest")
		}
		if bl.Descriptor.Digest.Validate() != nil || bl.Descriptor.Digest != bl.Descriptor.Digest.Algorithm().FromBytes(bl.Data) {
			t.Errorf("blob %s does not match its data", bl.Descriptor.Digest)
		}
		byDigest[bl.Descriptor.Digest.String()] = bl.Data
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(byDigest[a.Root.Digest.String()], &m); err != nil {
		t.Fatal(err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(byDigest[m.Config.Digest.String()], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "11111:11111" || cfg.Config.Entrypoint[0] != "/p7bundle-probe" || cfg.Architecture != "amd64" || cfg.Created != nil {
		t.Errorf("config = %+v", cfg)
	}
	tr := tar.NewReader(bytes.NewReader(byDigest[m.Layers[0].Digest.String()]))
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := io.ReadAll(tr)
	if h.Name != "p7bundle-probe" || h.Mode != 0o755 || h.ModTime.Unix() != 0 || !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		t.Errorf("layer entry %s mode %o mtime %v, ELF %v", h.Name, h.Mode, h.ModTime, bytes.HasPrefix(bin, []byte("\x7fELF")))
	}
}

func TestBuildIndexForTwoPlatforms(t *testing.T) {
	img, err := Build([]string{"linux/amd64", "linux/arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Root.MediaType != ocispec.MediaTypeImageIndex || len(img.Blobs) != 7 || len(img.Platforms) != 2 {
		t.Fatalf("root %s with %d blobs, platforms %v", img.Root.MediaType, len(img.Blobs), img.Platforms)
	}
	// No probe for what it is not built for: the bundle goes without.
	for _, p := range [][]string{{"linux/s390x"}, {"windows/amd64"}, {"linux/arm/v7"}} {
		if img, err := Build(p); img != nil || err != nil {
			t.Errorf("%v: %v, %v", p, img, err)
		}
	}
	if img, err := Build([]string{"windows/amd64", "linux/arm64"}); err != nil || img.Root.MediaType != ocispec.MediaTypeImageManifest || img.Platforms[0] != "linux/arm64" {
		t.Errorf("windows + arm64: %+v, %v", img, err)
	}
}

func TestRef(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":        Host + "/p7bundle-probe:v1.2.3",
		"62e12b8-dirty": Host + "/p7bundle-probe:62e12b8-dirty",
		"":              Host + "/p7bundle-probe:dev",
		"1.0+build/x":   Host + "/p7bundle-probe:1.0-build-x",
		"-weird":        Host + "/p7bundle-probe:dev-weird",
	} {
		if got := Ref(in); got != want || !IsProbe(got) {
			t.Errorf("Ref(%q) = %q, want %q", in, got, want)
		}
	}
}

// The embedded probe is what the source builds to, byte for byte: the
// build is reproducible, and `make probe` has run since the last change.
func TestEmbeddedProbeIsTheSourceRebuilt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	embeddedBin, err := embedded.ReadFile("embedded/p7bundle-probe-linux-amd64")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, "github.com/p7bundle/p7bundle/cmd/p7bundle-probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	rebuilt, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rebuilt, embeddedBin) {
		t.Errorf("the embedded probe (%d bytes) differs from a rebuild of cmd/p7bundle-probe (%d bytes): run make probe", len(embeddedBin), len(rebuilt))
	}
}
