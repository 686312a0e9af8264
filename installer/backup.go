package installer

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"sigs.k8s.io/yaml"
)

// Backup entries; the README entry says how to use them.
const (
	backupValues   = "values.yaml"
	backupSecrets  = "pseven-secrets.yaml"
	backupHistory  = "history.json"
	backupManifest = "manifest.yaml"
	backupReadme   = "README.txt"
)

// HistoryEntry is one revision as `helm history` shows it.
type HistoryEntry struct {
	Revision    int    `json:"revision"`
	Updated     string `json:"updated"`
	Status      string `json:"status"`
	Chart       string `json:"chart"`
	AppVersion  string `json:"appVersion"`
	Description string `json:"description"`
}

// historyEntries is the history as `helm history` shows it, oldest first.
func (s *ReleaseState) historyEntries() []HistoryEntry {
	var history []HistoryEntry
	for _, r := range s.History {
		e := HistoryEntry{Revision: r.Version, Status: r.Info.Status.String(), Description: r.Info.Description}
		if r.Chart != nil && r.Chart.Metadata != nil {
			e.Chart, e.AppVersion = r.Chart.Metadata.Name+"-"+r.Chart.Metadata.Version, r.Chart.Metadata.AppVersion
		}
		if !r.Info.LastDeployed.IsZero() {
			e.Updated = r.Info.LastDeployed.UTC().Format(time.RFC3339)
		}
		history = append(history, e)
	}
	return history
}

// BackupName is where the backup of a revision taken at now goes.
func BackupName(dir, release string, revision int, now time.Time) string {
	return filepath.Join(dir, fmt.Sprintf("pseven-backup-%s-r%d-%s.tar.zst", release, revision, now.UTC().Format("20060102T150405Z")))
}

// backupRevision writes the backup of the running revision under a new
// name: a retry within the same second gets "-2", "-3", ... appended.
func backupRevision(dir, release string, state *ReleaseState, kept []byte, namespace string) (string, error) {
	name := BackupName(dir, release, state.Current.Version, time.Now())
	for n := 2; ; n++ {
		err := writeBackup(name, state, kept, namespace)
		if err == nil || !errors.Is(err, os.ErrExist) || n > 100 {
			return name, err
		}
		name = strings.TrimSuffix(BackupName(dir, release, state.Current.Version, time.Now()), ".tar.zst") + fmt.Sprintf("-%d.tar.zst", n)
	}
}

// writeBackup saves what an upgrade could lose: the running revision's
// values and manifest, the kept secrets and the history. The file holds
// secrets: 0600, and an existing file is never replaced.
func writeBackup(path string, state *ReleaseState, kept []byte, namespace string) error {
	cur := state.Current
	values, err := yaml.Marshal(cur.Config)
	if err != nil {
		return fmt.Errorf("%w: backup: %v", ErrHelm, err)
	}
	hist, err := json.MarshalIndent(state.historyEntries(), "", "  ")
	if err != nil {
		return err
	}
	readme := fmt.Sprintf(`Backup of Helm release %[1]s in namespace %[2]s, revision %[3]d (chart %[4]s), taken before an upgrade.

%[5]s      the release's values (helm get values %[1]s -n %[2]s --revision %[3]d)
%[6]s  the deployment secrets p7bundle keeps in Secret %[7]s (if any)
%[8]s     the release history
%[9]s     the Kubernetes manifest of revision %[3]d

Get the running revision back (Helm keeps it): helm rollback %[1]s %[3]d -n %[2]s --wait
Or reinstall it with its values:  zstd -dc BACKUP | tar -x %[5]s; then
  p7bundle install OLD-BUNDLE -f %[5]s --allow-downgrade ...   (or p7bundle restore-values BACKUP)
`, state.Name, namespace, cur.Version, cur.Chart.Metadata.Version, backupValues, backupSecrets, keptSecretName(state.Name), backupHistory, backupManifest)

	entries := []tarEntry{{backupReadme, []byte(readme)}, {backupValues, values}, {backupHistory, hist}, {backupManifest, []byte(cur.Manifest)}}
	if kept != nil {
		entries = append(entries, tarEntry{backupSecrets, kept})
	}
	data, err := tarZst(entries, time.Time{})
	if err != nil {
		return err
	}
	return createPrivate(path, data)
}

// tarEntry is one file of a backup or support archive.
type tarEntry struct {
	name string
	data []byte
}

// tarZst is a small archive of 0600 files, built in memory.
func tarZst(entries []tarEntry, modTime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.data)), ModTime: modTime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
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

// ReadBackup returns the entries of a backup by name.
func ReadBackup(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", path, err)
	}
	defer zr.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", path, err)
		}
		if out[h.Name], err = io.ReadAll(io.LimitReader(tr, 64<<20)); err != nil {
			return nil, fmt.Errorf("backup %s: %w", path, err)
		}
	}
}

// RestoreValues writes the values saved in a backup to out (0600; default
// DefaultRestoredValuesFile), never over an existing file.
func RestoreValues(backup, out string) error {
	if out == "" {
		out = DefaultRestoredValuesFile
	}
	if err := checkOutputFile(out, false); err != nil {
		return err
	}
	entries, err := ReadBackup(backup)
	if err != nil {
		return err
	}
	data, ok := entries[backupValues]
	if !ok {
		return fmt.Errorf("backup %s holds no %s", backup, backupValues)
	}
	return createPrivate(out, data)
}
