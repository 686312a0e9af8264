package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/p7bundle/p7bundle/bundle"
)

// Text from an unverified manifest cannot steer the terminal: an OSC
// window title, a CSI clear screen and a carriage return are printed
// escaped (stdout passes through internal/safetext), and JSON stays JSON.
func TestUntrustedTextIsEscaped(t *testing.T) {
	dir := t.TempDir()
	manifest := func(file, name, version string) string {
		m := &bundle.Manifest{FormatVersion: bundle.FormatVersion, MediaType: bundle.MediaType, Chart: bundle.Chart{
			Name: name, Version: version, AppVersion: "6.47", Path: bundle.ChartDir + "pseven-1.tgz",
			Digest: digest.FromString("chart"), Size: 5,
		}}
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := manifest("old.json", "pseven", "1")
	evil := manifest("new.json", "pseven\u009b2J", "2\x1b]0;pwned\x07\rok")
	for _, args := range [][]string{{"diff", old, evil}, {"diff", old, evil, "--json"}} {
		r := p7(t, "", args...)
		if r.code != 0 || strings.ContainsAny(r.stdout, "\x1b\x07\r\u009b") || !strings.Contains(r.stdout, `\u001b]0;pwned\u0007`) {
			t.Errorf("%q: %q (exit %d, %s)", args[0:2], r.stdout, r.code, r.stderr)
		}
	}
}
