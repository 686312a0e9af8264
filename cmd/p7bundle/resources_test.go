package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mountTmpfs mounts a small tmpfs at dir (root only) and unmounts it after the test.
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

func TestBuildResourceFaults(t *testing.T) {
	s := startSite(t)
	readOnly := filepath.Join(s.dir, "ro")
	mountTmpfs(t, readOnly, "ro,size=1m")
	full := filepath.Join(s.dir, "full")
	mountTmpfs(t, full, "size=1m") // the bundle is ~2.7 MB

	cases := []struct {
		name, out string
		extra     []string
		want      string
	}{
		{"output directory not writable", filepath.Join(readOnly, "b.tar.zst"), nil, readOnly},
		{"disk full", filepath.Join(full, "b.tar.zst"), nil, "no space left on device"},
		{"cache directory not writable", filepath.Join(s.dir, "b.tar.zst"), []string{"--cache-dir", filepath.Join(readOnly, "cache")}, filepath.Join(readOnly, "cache")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.build(t, c.out, c.extra...)
			if r.code != exitOutput || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("want exit %d naming %q: %v", exitOutput, c.want, r)
			}
			if _, err := os.Stat(c.out); err == nil {
				t.Errorf("%s exists after a failed build", c.out)
			}
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(c.out), ".*"))
			if len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
	// The full disk is usable again: nothing of the failed build stayed on it.
	if entries, _ := os.ReadDir(full); len(entries) != 0 {
		t.Errorf("full disk holds %v", entries)
	}
}
