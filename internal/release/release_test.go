package release

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

// A site checks a release with stock tools: sha256sum -c, cosign
// verify-blob over SHA256SUMS, cosign verify-blob-attestation of each
// binary against the provenance. The same binaries sign to the same files.
func TestReleaseVerifiesWithStockTools(t *testing.T) {
	dir := t.TempDir()
	pw := []byte("release-pa55")
	if _, _, err := bundle.GenerateKeyPair(filepath.Join(dir, "release"), pw); err != nil {
		t.Fatal(err)
	}
	s, err := bundle.LoadSigner(context.Background(), filepath.Join(dir, "release.key"), pw)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(out string) {
		os.MkdirAll(out, 0o755)
		for name, data := range map[string]string{"p7bundle-1.0.0-linux-amd64": "elf", "p7bundle-1.0.0-windows-amd64.exe": "pe"} {
			os.WriteFile(filepath.Join(out, name), []byte(data), 0o755)
		}
		if err := Sign(context.Background(), out, s, Parameters{Version: "1.0.0", Platforms: []string{"linux/amd64", "windows/amd64"}}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	sign(a)
	sign(b)
	for _, f := range []string{SumsFile, SigFile, ProvenanceFile} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two signings of the same binaries", f)
		}
	}
	if out, err := exec.Command("sh", "-c", "cd "+a+" && sha256sum -c "+SumsFile).CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	cosign, err := testenv.Tool("cosign")
	if err != nil {
		t.Skip(err)
	}
	run := func(args ...string) error {
		cmd := exec.Command(cosign, args...)
		cmd.Dir = a
		cmd.Env = append(os.Environ(), "TUF_ROOT="+filepath.Join(dir, "tuf"), "SIGSTORE_NO_CACHE=true")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("cosign %v: %s", args, out)
		}
		return err
	}
	pub := filepath.Join(dir, "release.pub")
	if err := run("verify-blob", "--key", pub, "--signature", SigFile, "--insecure-ignore-tlog", SumsFile); err != nil {
		t.Errorf("cosign verify-blob SHA256SUMS: %v", err)
	}
	for _, bin := range []string{"p7bundle-1.0.0-linux-amd64", "p7bundle-1.0.0-windows-amd64.exe"} {
		if err := run("verify-blob-attestation", "--key", pub, "--type", "slsaprovenance1", "--signature", ProvenanceFile, "--insecure-ignore-tlog", bin); err != nil {
			t.Errorf("cosign verify-blob-attestation %s: %v", bin, err)
		}
	}
	os.WriteFile(filepath.Join(a, "p7bundle-1.0.0-linux-amd64"), []byte("tampered"), 0o755)
	if err := run("verify-blob-attestation", "--key", pub, "--type", "slsaprovenance1", "--signature", ProvenanceFile, "--insecure-ignore-tlog", "p7bundle-1.0.0-linux-amd64"); err == nil {
		t.Error("cosign accepted a changed binary")
	}
}

// make release-binaries twice gives the same bytes: once here, once from a
// copy of the tree at another path with an empty build cache (a fresh
// machine's build, as far as the compiler can tell).
func TestReleaseBinariesAreReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds p7bundle twice, once with an empty build cache")
	}
	root := testenv.RepoRoot()
	tmp := t.TempDir()
	elsewhere := filepath.Join(tmp, "elsewhere", "src")
	os.MkdirAll(elsewhere, 0o755)
	// The tree a clone has, with this checkout's edits: tracked and unignored files.
	cp := exec.Command("sh", "-c", `git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$1"`, "sh", elsewhere)
	cp.Dir = root
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("copying the tree: %v\n%s", err, out)
	}
	const platform, binary = "linux/arm64", "p7bundle-1.0.0-linux-arm64"
	build := func(dir, out string, env ...string) []byte {
		t.Helper()
		cmd := exec.Command("make", "-s", "release-binaries", "RELEASE_PLATFORMS="+platform, "RELEASE_DIR="+out, "VERSION=1.0.0", "COMMIT=0123456789abcdef")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make release-binaries in %s: %v\n%s", dir, err, out)
		}
		b, err := os.ReadFile(filepath.Join(out, binary))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := build(root, filepath.Join(tmp, "a"))
	b := build(elsewhere, filepath.Join(tmp, "b"), "GOCACHE="+filepath.Join(tmp, "gocache"))
	if len(a) < 1<<20 || !bytes.Equal(a, b) {
		t.Errorf("%s: %d and %d bytes, not identical", binary, len(a), len(b))
	}
}
