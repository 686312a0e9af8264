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
