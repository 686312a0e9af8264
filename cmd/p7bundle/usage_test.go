package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

// Wrong flags and arguments exit 2 with one line naming what is wrong,
// before any file is read or written and before any dial; a bad local
// input exits 3.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	b := filepath.Join(dir, "b.tar.zst") // never created: usage is checked first
	site := []string{"--registry", "reg.corp:5000"}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nosuch"}, exitUsage, `unknown command "nosuch"`},
		{[]string{"verify", b, "--key"}, exitUsage, "flag --key needs a value"},
		{[]string{"push", b, "--key", "k.pub", "--registry"}, exitUsage, "flag --registry needs a value"},
		{append([]string{"push", b, "--key", "k.pub", "--jobs", "abc"}, site...), exitUsage, `invalid value "abc" for flag -jobs`},
		{append([]string{"push", b, "--key", "k.pub", "--jobs", "0"}, site...), exitUsage, "--jobs must be at least 1, got 0"},
		{append([]string{"push", b, "--key", "k.pub", "--jobs", "-5"}, site...), exitUsage, "--jobs must be at least 1, got -5"},
		{append([]string{"install", b, "--key", "k.pub", "--timeout", "abc"}, site...), exitUsage, `invalid value "abc" for flag -timeout`},
		{append([]string{"install", b, "--key", "k.pub", "--jobs", "0"}, site...), exitUsage, "--jobs must be at least 1"},
		{append([]string{"push", b, "--key", "k.pub", "--insecure-skip-verify"}, site...), exitUsage, "--key and --insecure-skip-verify contradict"},
		{append([]string{"doctor", b, "--key", "k.pub", "--insecure-skip-verify"}, site...), exitUsage, "--key and --insecure-skip-verify contradict"},
		{[]string{"inspect", b, "--json", "--cyclonedx"}, exitUsage, "give one"},
		{[]string{"push", b, "--key", "k.pub", "--registry", "::::"}, exitUsage, `site registry "::::"`},
		{[]string{"values", b, "--registry", "reg.corp:99999", "-o", filepath.Join(dir, "v.yaml")}, exitUsage, `site registry "reg.corp:99999"`},
		{[]string{"lint", b, "--registry", "reg corp"}, exitUsage, `site registry "reg corp"`},
		{append([]string{"push", b, "--key", "k.pub", "--allow-endpoint", "https://minio.corp"}, site...), exitUsage, `--allow-endpoint: endpoint "https://minio.corp"`},
		{append([]string{"lint", b, "--allow-endpoint", "minio.corp:0"}, site...), exitUsage, "--allow-endpoint"},
		{[]string{"build", "--chart", "c", "--key", "k", "-o", filepath.Join(dir, "o.tar.zst"), "--mirror", "registry.pseven.io=::::"}, exitUsage, `--mirror "registry.pseven.io=::::"`},
		{append([]string{"values", b, "--set", "k={a,b"}, site...), exitInput, "list must terminate"}, // before the bundle is read
		// install checks its local files before it reads the bundle or dials.
		{append([]string{"install", b, "--key", "k.pub", "-f", filepath.Join(dir, "none.yaml")}, site...), exitInput, "values file: open " + filepath.Join(dir, "none.yaml")},
		{append([]string{"install", b, "--key", "k.pub", "-o", filepath.Join(dir, "no", "such", "v.yaml")}, site...), exitOutput, "directory " + filepath.Join(dir, "no", "such")},
		{append([]string{"install", b, "--key", "k.pub", "--set-file", "license=" + filepath.Join(dir, "license.txt")}, site...), exitInput, filepath.Join(dir, "license.txt")},
		{append([]string{"install", b, "--key", "k.pub", "--set", "k={a,b"}, site...), exitInput, "list must terminate"},
	} {
		r := p7(t, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 {
			t.Errorf("%q: %v\nwant exit %d and %q", tc.args, r, tc.code, tc.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("bad invocations left %v", entries)
	}
	// Keys that are not what they seem.
	garbage := filepath.Join(t.TempDir(), "cosign.pub")
	os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	for key, want := range map[string]string{garbage: "is not a PEM public key", "pkcs11:token=hsm;object=p7bundle": "PKCS#11 keys are not built in"} {
		if r := p7(t, "", "verify", b, "--key", key); r.code != exitKey || !strings.Contains(r.stderr, want) {
			t.Errorf("verify --key %s: %v", key, r)
		}
	}
	// A pipe is not a bundle: reads jump to the seek table at the end.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := p7(t, "", "inspect", fifo); r.code != exitInput || !strings.Contains(r.stderr, "not a regular file") {
		t.Errorf("inspect of a pipe: %v", r)
	}
	// --json gets JSON on failure too: the exit code, its kind, the line.
	for _, tc := range []struct {
		args []string
		code int
		kind string
	}{
		{[]string{"push", b, "--key", "k.pub", "--registry", "::::", "--json"}, exitUsage, "usage"},
		{[]string{"push", b, "--json", "--key"}, exitUsage, "usage"}, // refused before urfave parses anything
		{[]string{"inspect", b, "--json"}, exitInput, "input"},
		{[]string{"push", b, "--key", filepath.Join(dir, "none.pub"), "--registry", "reg.corp", "--json"}, exitKey, "key"},
	} {
		r := p7(t, "", tc.args...)
		var got struct {
			Error struct {
				Code    int    `json:"code"`
				Kind    string `json:"kind"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != tc.code || got.Error.Code != tc.code ||
			got.Error.Kind != tc.kind || "p7bundle: "+got.Error.Message != strings.TrimSpace(r.stderr) {
			t.Errorf("%q: %v (%v)", tc.args, r, err)
		}
	}
	var v map[string]any
	if r := p7(t, "", "version", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v["goVersion"] == nil || v["platform"] == nil || v["bundleFormat"] == nil {
		t.Errorf("version --json: %v", r)
	}
	// help works as everywhere else.
	for _, args := range [][]string{{"help"}, {"help", "verify"}, {"verify", "--help"}} {
		if r := p7(t, "", args...); r.code != 0 || !strings.Contains(r.stdout, "USAGE") {
			t.Errorf("%q: %v", args, r)
		}
	}
}

// The README's exit code table lists exactly the codes exit.go returns.
func TestExitCodesMatchTheREADME(t *testing.T) {
	readme := string(mustRead(t, filepath.Join(testenv.RepoRoot(), "README.md")))
	_, table, ok := strings.Cut(readme, "### Exit codes\n")
	if !ok {
		t.Fatal("README has no Exit codes section")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	documented := map[int]bool{}
	for _, line := range strings.Split(table, "\n") {
		var code int
		if _, err := fmt.Sscanf(line, "| %d |", &code); err == nil {
			documented[code] = true
		}
	}
	want := map[int]bool{exitOK: true}
	for code := range exitKinds {
		want[code] = true
	}
	if fmt.Sprint(documented) != fmt.Sprint(want) {
		t.Errorf("README documents exit codes %v, exit.go returns %v", documented, want)
	}
}
