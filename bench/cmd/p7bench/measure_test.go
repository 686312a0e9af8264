package main

import (
	"context"
	"os/exec"
	"testing"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
)

// Peak RSS comes from /usr/bin/time -v when it is installed and from wait4's
// rusage otherwise; both must see a child that allocates ~64 MiB.
func TestRunMeasuresPeakRSS(t *testing.T) {
	script := `dd if=/dev/zero bs=64M count=1 of=/dev/null status=none`
	modes := map[string]string{"rusage": ""}
	if p, err := exec.LookPath("/usr/bin/time"); err == nil {
		modes["time -v"] = p
	}
	for name, bin := range modes {
		r := &runner{timeBin: bin, work: t.TempDir()}
		s, err := r.run(context.Background(), cmdSpec{Script: script})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.MaxRSSKiB < 60<<10 || s.Wall <= 0 {
			t.Errorf("%s: peak RSS %d KiB, wall %.3fs; want ≥ 60 MiB", name, s.MaxRSSKiB, s.Wall)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"64M": 64 << 20, "2G": 2 << 30, "1.5G": 3 << 29, "8g": 8 << 30, "512KiB": 512 << 10, "1000": 1000} {
		if got, err := workload.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}
