package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

// TestSmoke runs the serve benchmark at a tiny size so that `make test`
// keeps it working: both servers answer every pull, a row each.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds p7bundle and runs a registry")
	}
	bin := filepath.Join(t.TempDir(), "p7bundle")
	build := exec.Command("go", "build", "-o", bin, "./cmd/p7bundle")
	build.Dir = testenv.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/p7bundle: %v\n%s", err, out)
	}
	rows, err := run(context.Background(), bin, t.TempDir(), 16<<20, workload.Gzip, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || !strings.Contains(rows[0], "p7bundle serve") || !strings.Contains(rows[1], "docker-registry") {
		t.Errorf("rows: %q", rows)
	}
}
