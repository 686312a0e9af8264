package manifests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

var (
	fixtureDir   = filepath.Join("..", "testdata", "charts", "pseven")
	badDir       = filepath.Join("..", "testdata", "charts", "bad")
	noAppVersion = filepath.Join(badDir, "no-appversion")
	noImages     = filepath.Join(badDir, "no-images")
	notAChartTgz = filepath.Join(badDir, "not-a-chart.tgz")
)

// packagedFixture packages the fixture with Helm (like `helm package`) into
// a temporary directory and returns the .tgz path.
func packagedFixture(t *testing.T) string {
	t.Helper()
	ch, err := loader.LoadDir(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := chartutil.Save(ch, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// copyFixture copies the fixture directory into a temporary directory (new
// mtimes, new location) and returns the copy's path.
func copyFixture(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "pseven")
	if err := os.CopyFS(dst, os.DirFS(fixtureDir)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func mustLoad(t *testing.T, p string) *Chart {
	t.Helper()
	c, err := LoadChart(p)
	if err != nil {
		t.Fatalf("LoadChart(%q): %v", p, err)
	}
	return c
}

func TestLoadChart(t *testing.T) {
	tgz := packagedFixture(t)
	tgzBytes, err := os.ReadFile(tgz)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		path        string
		wantArchive []byte // nil: packaged by LoadChart
	}{
		{name: "directory", path: fixtureDir},
		{name: "directory with trailing slash", path: fixtureDir + string(filepath.Separator)},
		{name: "helm-packaged tgz", path: tgz, wantArchive: tgzBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.path)
			if c.Name != "pseven" || c.Version != "2023.09.25" || c.AppVersion != "6.47.4712" {
				t.Errorf("Name, Version, AppVersion = %q, %q, %q, want pseven, 2023.09.25, 6.47.4712", c.Name, c.Version, c.AppVersion)
			}
			if c.Path != tt.path {
				t.Errorf("Path = %q, want %q", c.Path, tt.path)
			}
			if c.FileName != "pseven-2023.09.25.tgz" {
				t.Errorf("FileName = %q, want pseven-2023.09.25.tgz", c.FileName)
			}
			sum := sha256.Sum256(c.Archive)
			if want := "sha256:" + hex.EncodeToString(sum[:]); c.Digest != want {
				t.Errorf("Digest = %q, want %q", c.Digest, want)
			}
			if tt.wantArchive != nil && !bytes.Equal(c.Archive, tt.wantArchive) {
				t.Errorf("Archive differs from the original .tgz (%d vs %d bytes)", len(c.Archive), len(tt.wantArchive))
			}
			if c.Chart == nil || c.Chart.Name() != "pseven" {
				t.Fatalf("Chart not loaded: %+v", c.Chart)
			}
			deps := c.Chart.Dependencies()
			if len(deps) != 1 || deps[0].Name() != "pseven-cache" {
				t.Errorf("subcharts = %v, want [pseven-cache]", deps)
			}
		})
	}
}

// archiveEntry is what matters of a tar entry for reproducibility.
type archiveEntry struct {
	Name     string
	Typeflag byte
	Mode     int64
	Uid, Gid int
	Uname    string
	Gname    string
	ModTime  time.Time
	Data     string
}

func readArchive(t *testing.T, b []byte) (*gzip.Header, []archiveEntry) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	hdr := zr.Header
	tr := tar.NewReader(zr)
	var out []archiveEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, archiveEntry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime, string(data)})
	}
	return &hdr, out
}

func TestLoadChartDirectoryArchive(t *testing.T) {
	first := mustLoad(t, fixtureDir)
	second := mustLoad(t, fixtureDir)
	if !bytes.Equal(first.Archive, second.Archive) || first.Digest != second.Digest {
		t.Fatalf("two loads of the same directory give different archives: %s vs %s", first.Digest, second.Digest)
	}

	// A copy elsewhere (new mtimes) plus files .helmignore excludes: same bytes.
	cp := copyFixture(t)
	for _, junk := range []string{"values.yaml.bak", "templates/deployment.yaml~", ".DS_Store"} {
		if err := os.WriteFile(filepath.Join(cp, junk), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(cp, "values.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	copied := mustLoad(t, cp)
	if copied.Digest != first.Digest {
		t.Errorf("copy with ignored files: digest %s, want %s", copied.Digest, first.Digest)
	}

	gz, entries := readArchive(t, first.Archive)
	if gz.Name != "" || !gz.ModTime.IsZero() || gz.Comment != "" {
		t.Errorf("gzip header name %q, mtime %v, comment %q; want all empty", gz.Name, gz.ModTime, gz.Comment)
	}
	var names, files []string
	for _, e := range entries {
		names = append(names, e.Name)
		if !strings.HasPrefix(e.Name, "pseven/") {
			t.Errorf("entry %q is not under pseven/", e.Name)
		}
		if e.Uid != 0 || e.Gid != 0 || e.Uname != "" || e.Gname != "" || e.ModTime.Unix() != 0 {
			t.Errorf("entry %q: uid %d gid %d uname %q gname %q mtime %v; want 0 0 \"\" \"\" epoch", e.Name, e.Uid, e.Gid, e.Uname, e.Gname, e.ModTime)
		}
		switch e.Typeflag {
		case tar.TypeDir:
			if e.Mode != 0o755 || !strings.HasSuffix(e.Name, "/") {
				t.Errorf("dir %q mode %o", e.Name, e.Mode)
			}
		case tar.TypeReg:
			if e.Mode != 0o644 {
				t.Errorf("file %q mode %o", e.Name, e.Mode)
			}
			files = append(files, strings.TrimPrefix(e.Name, "pseven/"))
		default:
			t.Errorf("entry %q has type %q", e.Name, e.Typeflag)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}

	// Exactly the files Helm loaded, nothing ignored.
	var raw []string
	for _, f := range first.Chart.Raw {
		raw = append(raw, f.Name)
	}
	sort.Strings(raw)
	if strings.Join(files, "\n") != strings.Join(raw, "\n") {
		t.Errorf("archive files:\n%s\nwant the files Helm loaded:\n%s", strings.Join(files, "\n"), strings.Join(raw, "\n"))
	}
	for _, want := range []string{".helmignore", "Chart.yaml", "values.yaml", "templates/_helpers.tpl", "charts/pseven-cache/values.yaml"} {
		if !contains(files, want) {
			t.Errorf("archive lacks %s", want)
		}
	}

	// Helm loads it back, and so does LoadChart (as a .tgz, same bytes).
	ch, err := loader.LoadArchive(bytes.NewReader(first.Archive))
	if err != nil {
		t.Fatalf("helm cannot load the packaged archive: %v", err)
	}
	if ch.Metadata.Name != "pseven" || ch.Metadata.Version != "2023.09.25" || ch.Metadata.AppVersion != "6.47.4712" || len(ch.Templates) != len(first.Chart.Templates) || len(ch.Dependencies()) != 1 {
		t.Errorf("reloaded chart differs: %+v, %d templates, %d subcharts", ch.Metadata, len(ch.Templates), len(ch.Dependencies()))
	}
	tgz := filepath.Join(t.TempDir(), first.FileName)
	if err := os.WriteFile(tgz, first.Archive, 0o644); err != nil {
		t.Fatal(err)
	}
	again := mustLoad(t, tgz)
	if again.Digest != first.Digest {
		t.Errorf("reloading the archive as .tgz: digest %s, want %s", again.Digest, first.Digest)
	}
	// Chart.yaml is kept as written (comments included), not re-serialised.
	for _, e := range entries {
		if e.Name == "pseven/Chart.yaml" && !strings.Contains(e.Data, "# Chart versions are release dates") {
			t.Errorf("Chart.yaml lost its comments:\n%s", e.Data)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestLoadChartErrors(t *testing.T) {
	tmp := t.TempDir()
	notChartDir := filepath.Join(tmp, "empty-dir")
	if err := os.Mkdir(notChartDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(notChartDir, "README.md"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(tmp, "huge.tgz")
	if err := os.WriteFile(huge, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, MaxChartSize+1); err != nil { // sparse, instant
		t.Fatal(err)
	}
	library := filepath.Join(tmp, "library")
	if err := os.Mkdir(library, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(library, "Chart.yaml"), []byte("apiVersion: v2\nname: library\nversion: 1.0.0\nappVersion: \"1\"\ntype: library\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
		want error
	}{
		{"no appVersion", noAppVersion, ErrNoAppVersion},
		{"gzip of random text", notAChartTgz, ErrInvalidChart},
		{"plain YAML file", filepath.Join(fixtureDir, "values.yaml"), ErrInvalidChart},
		{"directory without Chart.yaml", notChartDir, ErrInvalidChart},
		{"library chart", library, ErrInvalidChart},
		{"larger than the cap", huge, ErrChartTooLarge},
		{"missing", filepath.Join(tmp, "missing.tgz"), fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadChart(tt.path)
			if !errors.Is(err, tt.want) {
				t.Fatalf("LoadChart(%q) = %v, %v; want error %v", tt.path, c, err, tt.want)
			}
			if !strings.Contains(err.Error(), `chart "`+tt.path+`"`) {
				t.Errorf("error %q does not name the path %q", err, tt.path)
			}
			if c != nil {
				t.Errorf("got a chart with an error")
			}
		})
	}
}

func TestLoadChartTooLargeMessage(t *testing.T) {
	huge := filepath.Join(t.TempDir(), "huge.tgz")
	if err := os.WriteFile(huge, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, MaxChartSize+1); err != nil {
		t.Fatal(err)
	}
	_, err := LoadChart(huge)
	if err == nil || !strings.Contains(err.Error(), "64 MiB") {
		t.Errorf("error %v does not state the 64 MiB limit", err)
	}
}
