package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The bash script is valid bash, and completes commands and flags when
// bash runs it against the real binary.
func TestBashCompletion(t *testing.T) {
	r := p7(t, "", "completion", "bash")
	if r.code != 0 {
		t.Fatal(r)
	}
	script := filepath.Join(t.TempDir(), "p7bundle.bash")
	os.WriteFile(script, []byte(r.stdout), 0o644)
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		// p7bundle is this test binary run as the CLI.
		prog := `p7bundle() { ` + asCLI + `=1 "$SELF" "$@"; }
source "$SCRIPT"
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
_p7bundle_complete
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", append([]string{"-c", prog, "bash"}, words...)...)
		cmd.Env = append(os.Environ(), "SELF="+self, "SCRIPT="+script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"p7bundle", "ver"}, "verify version"},
		{[]string{"p7bundle", "comp"}, "completion"},
		{[]string{"p7bundle", "verify", "--k"}, "--key"},
		{[]string{"p7bundle", "push", "--strict"}, "--strict-egress"},
		{[]string{"p7bundle", "install", "--set-j"}, "--set-json"},
	} {
		if got := strings.Join(complete(tc.words...), " "); got != tc.want {
			t.Errorf("completing %q = %q, want %q", tc.words, got, tc.want)
		}
	}
	for _, shell := range []string{"zsh", "fish", "powershell"} {
		if r := p7(t, "", "completion", shell); r.code != 0 || !strings.Contains(r.stdout, "p7bundle") {
			t.Errorf("completion %s: %v", shell, r)
		}
	}
	if r := p7(t, "", "completion", "tcsh"); r.code != exitUsage {
		t.Errorf("completion tcsh: %v", r)
	}
}
