package manifests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

var (
	// ErrInvalidChart means the path is not a loadable Helm chart (bad archive,
	// missing or invalid Chart.yaml, broken templates...).
	ErrInvalidChart = errors.New("not a valid Helm chart")
	// ErrNoAppVersion means Chart.yaml has no appVersion. The appVersion is the
	// tag of every pSeven Enterprise image that the chart lists without one.
	ErrNoAppVersion = errors.New("chart has no appVersion")
	// ErrNoImages means discovery found no image at all.
	ErrNoImages = errors.New("no images found")
	// ErrChartTooLarge means the chart exceeds MaxChartSize.
	ErrChartTooLarge = errors.New("chart too large")
)

// MaxChartSize caps the chart archive, and the total size of the files of a
// chart directory. Real charts are well under a few MiB.
const MaxChartSize = 64 << 20

// Chart is a loaded Helm chart together with the archive that goes into the
// bundle.
type Chart struct {
	Name       string
	Version    string
	AppVersion string

	// Path is the path the chart was loaded from, as given by the caller.
	Path string
	// Chart is the chart as loaded by Helm. Treat it as read-only.
	Chart *chart.Chart

	// Archive is the chart as a .tgz: the original bytes when a .tgz was
	// loaded; when a directory was loaded, a deterministic archive of the
	// files Helm loaded (see LoadChart).
	Archive []byte
	// Digest is "sha256:<hex>" of Archive.
	Digest string
	// FileName is "<name>-<version>.tgz", the name `helm package` would use.
	FileName string
}

// LoadChart loads a chart from a .tgz archive or from a chart directory.
//
// For a directory, Archive is packaged by us from exactly the files Helm
// loaded (so .helmignore is respected), rooted at "<name>/" like
// `helm package`, and is byte-for-byte reproducible: entries sorted, mtime 0,
// uid/gid 0, modes 0644/0755, no gzip name or mtime. Unlike `helm package`,
// Chart.yaml is kept as written (comments included), not re-serialised.
//
// Errors name the path and wrap ErrInvalidChart, ErrNoAppVersion or
// ErrChartTooLarge, or the error from the file system.
func LoadChart(p string) (*Chart, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", p, err)
	}
	var (
		ch      *chart.Chart
		archive []byte
	)
	switch {
	case fi.IsDir():
		ch, err = loader.LoadDir(p)
		if err != nil {
			return nil, fmt.Errorf("chart %q: %w: %w", p, ErrInvalidChart, err)
		}
		if err := checkMetadata(p, ch); err != nil {
			return nil, err
		}
		var total int64
		for _, f := range ch.Raw {
			total += int64(len(f.Data))
		}
		if total > MaxChartSize {
			return nil, fmt.Errorf("chart %q: %w: its files total %d bytes, more than the %d MiB limit", p, ErrChartTooLarge, total, MaxChartSize>>20)
		}
		archive, err = packageFiles(ch.Name(), ch.Raw)
		if err != nil {
			return nil, fmt.Errorf("chart %q: packaging: %w", p, err)
		}
	case fi.Mode().IsRegular():
		if fi.Size() > MaxChartSize {
			return nil, fmt.Errorf("chart %q: %w: %d bytes, more than the %d MiB limit", p, ErrChartTooLarge, fi.Size(), MaxChartSize>>20)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("chart %q: %w", p, err)
		}
		// The limit guards against a file that grows after the Stat.
		archive, err = io.ReadAll(io.LimitReader(f, MaxChartSize+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("chart %q: %w", p, err)
		}
		return LoadChartArchive(p, archive)
	default:
		return nil, fmt.Errorf("chart %q: %w: neither a directory nor a regular file", p, ErrInvalidChart)
	}
	return newChart(p, ch, archive), nil
}

// LoadChartArchive loads a chart .tgz held in memory (from a bundle);
// name labels errors.
func LoadChartArchive(name string, archive []byte) (*Chart, error) {
	if len(archive) > MaxChartSize {
		return nil, fmt.Errorf("chart %q: %w: more than the %d MiB limit", name, ErrChartTooLarge, MaxChartSize>>20)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w: %w", name, ErrInvalidChart, err)
	}
	if err := checkMetadata(name, ch); err != nil {
		return nil, err
	}
	return newChart(name, ch, archive), nil
}

func newChart(path string, ch *chart.Chart, archive []byte) *Chart {
	md := ch.Metadata
	return &Chart{
		Name: md.Name, Version: md.Version, AppVersion: md.AppVersion,
		Path: path, Chart: ch, Archive: archive,
		Digest:   digest.FromBytes(archive).String(),
		FileName: md.Name + "-" + md.Version + ".tgz",
	}
}

// checkMetadata rejects charts p7bundle cannot install. Helm's loader has
// already validated name and version.
func checkMetadata(p string, ch *chart.Chart) error {
	md := ch.Metadata
	if md == nil {
		return fmt.Errorf("chart %q: %w: no Chart.yaml", p, ErrInvalidChart)
	}
	if md.Type == "library" {
		return fmt.Errorf("chart %q: %w: %s is a library chart, which cannot be installed", p, ErrInvalidChart, md.Name)
	}
	if strings.TrimSpace(md.AppVersion) == "" {
		return fmt.Errorf("chart %q: %w: set appVersion in Chart.yaml to the full pSeven Enterprise version", p, ErrNoAppVersion)
	}
	return nil
}

// archiveEpoch is the fixed modification time of every archive entry.
var archiveEpoch = time.Unix(0, 0)

// packageFiles writes files (names relative to the chart root, "/"
// separated, as Helm's loader returns them) into a reproducible .tgz rooted
// at "<name>/", with an entry for every directory.
func packageFiles(name string, files []*chart.File) ([]byte, error) {
	type entry struct {
		name string
		data []byte
		dir  bool
	}
	seen := map[string]bool{}
	var entries []entry
	addDir := func(d string) {
		if !seen[d] {
			seen[d] = true
			entries = append(entries, entry{name: d, dir: true})
		}
	}
	addDir(name + "/")
	for _, f := range files {
		n := path.Clean(f.Name)
		if n == "." || path.IsAbs(n) || n == ".." || strings.HasPrefix(n, "../") {
			return nil, fmt.Errorf("illegal file name %q", f.Name)
		}
		full := name + "/" + n
		if seen[full] {
			return nil, fmt.Errorf("duplicate file %q", f.Name)
		}
		seen[full] = true
		for d := path.Dir(full); d != name && d != "."; d = path.Dir(d) {
			addDir(d + "/")
		}
		entries = append(entries, entry{name: full, data: f.Data})
	}
	// Lexical order puts every directory ("a/") before its contents ("a/x").
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	// Header.Name, Comment and ModTime stay empty, so no time or name leaks in.
	// The tar format is left to archive/tar: USTAR whenever the entry fits,
	// PAX for long names; the choice depends only on the entry.
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			ModTime: archiveEpoch,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
			h.Mode = 0o755
		} else {
			h.Typeflag = tar.TypeReg
			h.Mode = 0o644
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
