package installer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/release"
)

func readBackup(t *testing.T, path string) map[string]string {
	t.Helper()
	entries, err := ReadBackup(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range entries {
		out[k] = string(v)
	}
	return out
}

func TestBackupHoldsWhatAnUpgradeCouldLose(t *testing.T) {
	cfg := memoryConfig(t, release.StatusSuperseded, release.StatusDeployed, release.StatusFailed)
	state, _ := ReadRelease(cfg, "pseven-rl")
	state.Current.Manifest = "---\nkind: ConfigMap\n"
	dir := t.TempDir()
	path := BackupName(dir, "pseven-rl", state.Current.Version, time.Date(2026, 11, 30, 18, 5, 27, 0, time.UTC))
	if filepath.Base(path) != "pseven-backup-pseven-rl-r2-20261130T180527Z.tar.zst" {
		t.Errorf("name %s", path)
	}
	if err := writeBackup(path, state, []byte("secrets:\n  a: kept\n"), "pseven-ns"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	got := readBackup(t, path)
	if !strings.Contains(got[backupValues], "host: db-r2") {
		t.Errorf("values.yaml is not revision 2's:\n%s", got[backupValues])
	}
	if got[backupSecrets] != "secrets:\n  a: kept\n" || got[backupManifest] != state.Current.Manifest {
		t.Errorf("secrets/manifest: %q / %q", got[backupSecrets], got[backupManifest])
	}
	var hist []HistoryEntry
	if err := json.Unmarshal([]byte(got[backupHistory]), &hist); err != nil || len(hist) != 3 ||
		hist[1].Status != "deployed" || hist[2].Status != "failed" || hist[1].Chart != "pseven-2023.09.25" {
		t.Errorf("history %+v, %v", hist, err)
	}
	if !strings.Contains(got[backupReadme], "helm rollback pseven-rl 2 -n pseven-ns") {
		t.Errorf("README:\n%s", got[backupReadme])
	}
	// Never overwritten.
	if err := writeBackup(path, state, nil, "pseven-ns"); err == nil {
		t.Error("an existing backup was replaced")
	}
	out := filepath.Join(dir, "values.restored.yaml")
	if err := RestoreValues(path, out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != got[backupValues] {
		t.Errorf("restored %q", b)
	}
	if err := RestoreValues(path, out); err == nil {
		t.Error("restore-values overwrote a file")
	}
}

// A retry right after a failed upgrade backs up the same revision again,
// often within the same second: a second file, never a refusal.
func TestBackupRetryGetsItsOwnFile(t *testing.T) {
	cfg := memoryConfig(t, release.StatusDeployed, release.StatusFailed)
	state, _ := ReadRelease(cfg, "pseven-rl")
	dir := t.TempDir()
	seen := map[string]bool{}
	for range 3 {
		path, err := backupRevision(dir, "pseven-rl", state, []byte("secrets: {}\n"), "pseven-ns")
		if err != nil {
			t.Fatal(err)
		}
		if seen[path] {
			t.Fatalf("%s written twice", path)
		}
		seen[path] = true
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("%d files in the backup dir, want 3", len(entries))
	}
}
