package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

// Every command, each class of bad input: the documented exit code, one
// stderr line naming the thing, and nothing created. The unwritable
// outputs are a missing directory and a path under a regular file, since
// tests may run as root, for whom a read-only directory is writable.
func TestBadInputEveryCommand(t *testing.T) {
	s := startSite(t)
	good := filepath.Join(s.dir, "good", "b.tar.zst")
	split := filepath.Join(s.dir, "good", "split.tar.zst")
	os.MkdirAll(filepath.Dir(good), 0o755)
	for out, extra := range map[string][]string{good: nil, split: {"--split-size", "8Mi"}} {
		if r := s.build(t, out, extra...); r.code != 0 {
			t.Fatalf("build %s: %v", out, r)
		}
	}
	dir := t.TempDir() // only what the table creates on purpose goes here
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("not a bundle, not a key, not a directory\n"), 0o644)
	kubeconfig := unreachableKubeconfig(t, dir)
	t.Setenv("KUBECONFIG", kubeconfig)
	t.Chdir(dir) // default outputs (install's log, keygen's cosign.key) land where they are watched
	oldKey := filepath.Join(dir, "old.key")
	os.WriteFile(oldKey, []byte("an older key, never to be replaced\n"), 0o600)
	none := filepath.Join(dir, "none")
	noDir := filepath.Join(dir, "no", "such", "out")
	underFile := filepath.Join(file, "out")
	pub, key, chart := s.pub, s.key, testenv.FixtureChart()
	site := []string{"--registry", "reg.corp:5000"}
	cluster := []string{"--kubeconfig", kubeconfig}

	type row struct {
		class string
		args  []string
		code  int
		want  string // in the one stderr line
	}
	var rows []row
	add := func(class string, code int, want string, args ...string) {
		rows = append(rows, row{class, args, code, want})
	}
	for _, c := range newApp(&environment{}).Commands {
		if c.Name != "help" {
			add("unknown flag", exitUsage, "flag provided but not defined: -nosuch", c.Name, "--nosuch")
		}
	}

	// Arguments: missing, one too many.
	for _, args := range [][]string{
		{"verify", "--key", pub}, {"inspect"}, {"diff", good}, {"join"}, {"install", "--key", pub, site[0], site[1]},
		{"doctor", "--key", pub, site[0], site[1]}, {"push", "--key", pub, site[0], site[1]},
		{"values", site[0], site[1]}, {"lint", site[0], site[1]}, {"restore-values"}, {"completion"},
		{"approve", "--key", key, "--bundle-key", pub},
	} {
		add("missing argument", exitUsage, args[0], args...)
	}
	for _, args := range [][]string{
		{"build", "x", "--chart", chart, "--key", key}, {"verify", good, "x", "--key", pub}, {"inspect", good, "x"},
		{"diff", good, good, "x"}, {"join", split + ".001", "x"}, {"install", good, "x", "--key", pub, site[0], site[1]},
		{"doctor", good, "x", "--key", pub, site[0], site[1]}, {"push", good, "x", "--key", pub, site[0], site[1]},
		{"values", good, "x", site[0], site[1]}, {"lint", good, "x", site[0], site[1]}, {"restore-values", file, "x"},
		{"support", "x"}, {"keygen", "x"}, {"public-key", "x", "--key", key}, {"version", "x"}, {"completion", "bash", "x"},
		{"approve", good, "x", "--key", key, "--bundle-key", pub},
	} {
		add("extra argument", exitUsage, args[0], args...)
	}

	// Required flags, and values that do not parse.
	add("missing flag", exitUsage, `"key"`, "build", "--chart", chart)
	add("missing flag", exitUsage, `"chart"`, "build", "--key", key)
	add("missing flag", exitUsage, `"key"`, "verify", good)
	add("missing flag", exitUsage, `"key"`, "public-key")
	add("missing flag", exitUsage, `"key"`, "approve", good, "--bundle-key", pub)
	add("missing flag", exitUsage, `"bundle-key"`, "approve", good, "--key", key)
	add("bad number", exitUsage, `--expires "x"`, "approve", good, "--key", key, "--bundle-key", pub, "--expires", "x")
	add("bad value", exitUsage, `--not-before "monday"`, "approve", good, "--key", key, "--bundle-key", pub, "--not-before", "monday")
	add("missing input", exitInput, none, "approve", none, "--key", key, "--bundle-key", pub, "-o", filepath.Join(dir, "a.jsonl"))
	add("missing input", exitInput, none, "verify", good, "--key", pub, "--approvals-file", none)
	add("missing key", exitKey, none, "approve", good, "--key", none, "--bundle-key", pub, "-o", filepath.Join(dir, "a.jsonl"))
	add("missing key", exitKey, none, "approve", good, "--key", key, "--bundle-key", none, "-o", filepath.Join(dir, "a.jsonl"))
	add("not a key", exitKey, file, "approve", good, "--key", file, "--bundle-key", pub, "-o", filepath.Join(dir, "a.jsonl"))
	add("missing key", exitKey, none, "verify", good, "--key", pub, "--approver-key", none)
	for _, c := range []string{"install", "doctor", "push"} {
		add("missing flag", exitUsage, `"registry"`, c, good, "--key", pub)
		add("bad registry", exitUsage, `site registry "a b"`, c, good, "--key", pub, "--registry", "a b")
		add("conflicting flags", exitUsage, "contradict", c, good, "--key", pub, site[0], site[1], "--insecure-skip-verify")
		add("missing input", exitInput, none, c, good, "--key", pub, site[0], site[1], "--ca-file", none)
		add("missing input", exitInput, none, c, good, "--key", pub, site[0], site[1], "--approvals", none)
		add("missing input", exitInput, none, c, good, "--key", pub, site[0], site[1], "--policy", none)
		add("missing key", exitKey, none, c, good, "--key", pub, site[0], site[1], "--require-approval", none)
		add("conflicting flags", exitUsage, "contradict", c, good, "--require-approval", pub, site[0], site[1], "--insecure-skip-verify")
	}
	for _, c := range []string{"install", "push"} {
		add("bad number", exitUsage, `"x" for flag -jobs`, c, good, "--key", pub, site[0], site[1], "--jobs", "x")
		add("bad number", exitUsage, "--jobs must be at least 1", c, good, "--key", pub, site[0], site[1], "--jobs", "0")
	}
	for _, c := range []string{"values", "lint"} {
		add("missing flag", exitUsage, `"registry"`, c, good)
		add("bad registry", exitUsage, `site registry "reg.corp:99999"`, c, good, "--registry", "reg.corp:99999")
	}
	add("bad registry", exitUsage, `--mirror "registry.pseven.io=::::"`, "build", "--chart", chart, "--key", key, "-o", filepath.Join(dir, "o.tar.zst"), "--mirror", "registry.pseven.io=::::")
	add("bad number", exitUsage, `"x" for flag -jobs`, "build", "--chart", chart, "--key", key, "--jobs", "x")
	add("bad number", exitUsage, `--split-size "1Q"`, "build", "--chart", chart, "--key", key, "-o", filepath.Join(dir, "o.tar.zst"), "--split-size", "1Q")
	add("bad number", exitUsage, `"5" for flag -timeout`, "install", good, "--key", pub, site[0], site[1], "--timeout", "5")
	add("bad number", exitUsage, `"x" for flag -tail`, "support", "--tail", "x")
	add("bad value", exitUsage, `"tcsh"`, "completion", "tcsh")
	add("conflicting flags", exitUsage, "give one", "inspect", good, "--json", "--manifest")
	add("missing argument", exitUsage, "serve", "serve", "--key", pub)
	add("missing argument", exitUsage, "export", "export", "--key", pub, "--oci-layout", filepath.Join(dir, "l"))
	add("extra argument", exitUsage, "export", "export", good, "x", "--key", pub, "--oci-layout", filepath.Join(dir, "l"))
	add("missing flag", exitUsage, `"key"`, "export", good, "--oci-layout", filepath.Join(dir, "l"))
	add("missing flag", exitUsage, "--oci-layout DIR or --docker-archive", "export", good, "--key", pub)
	add("conflicting flags", exitUsage, "give one", "export", good, "--key", pub, "--oci-layout", filepath.Join(dir, "l"), "--docker-archive")
	add("missing input", exitInput, none, "export", none, "--key", pub, "--oci-layout", filepath.Join(dir, "l"))
	add("missing input", exitInput, none, "export", good, "--key", pub, "--oci-layout", filepath.Join(dir, "l"), "--base", none)
	add("not a bundle", exitInput, file, "export", file, "--key", pub, "--oci-layout", filepath.Join(dir, "l"))
	add("missing key", exitKey, none, "export", good, "--key", none, "--oci-layout", filepath.Join(dir, "l"))
	add("missing flag", exitUsage, `"key"`, "serve", good)
	add("conflicting flags", exitUsage, "--tls-cert and --tls-key", "serve", good, "--key", pub, "--tls-cert", file)
	add("missing input", exitInput, none, "serve", none, "--key", pub, "--addr", "127.0.0.1:0")
	add("missing input", exitInput, none, "serve", good, "--key", pub, "--addr", "127.0.0.1:0", "--htpasswd", none)
	add("missing input", exitInput, none, "serve", good, "--key", pub, "--addr", "127.0.0.1:0", "--tls-cert", none, "--tls-key", none)
	add("not a bundle", exitInput, file, "serve", file, "--key", pub, "--addr", "127.0.0.1:0")
	add("missing key", exitKey, none, "serve", good, "--key", none, "--addr", "127.0.0.1:0")
	add("not a key", exitKey, file, "serve", good, "--key", file, "--addr", "127.0.0.1:0")
	add("stdout as file", exitUsage, "-o -", "values", good, site[0], site[1], "-o", "-")

	// Inputs that are missing or are not what they should be.
	add("missing input", exitInput, none, "build", "--chart", none, "--key", key, "-o", filepath.Join(dir, "o.tar.zst"))
	for _, args := range [][]string{
		{"verify", none, "--key", pub}, {"inspect", none}, {"diff", none, good}, {"join", none},
		{"install", none, "--key", pub, site[0], site[1]}, {"doctor", none, "--key", pub, site[0], site[1]},
		{"push", none, "--key", pub, site[0], site[1]}, {"values", none, site[0], site[1], "-o", filepath.Join(dir, "v.yaml")},
		{"lint", none, site[0], site[1]}, {"restore-values", none, "-o", filepath.Join(dir, "v.yaml")},
		{"support", "--bundle", none, "-o", filepath.Join(dir, "s.tar.zst"), cluster[0], cluster[1]},
	} {
		add("missing input", exitInput, none, args...)
	}
	add("not a bundle", exitVerify, file+".sig", "verify", file, "--key", pub) // the signature is checked first
	for _, args := range [][]string{
		{"inspect", file}, {"diff", file, good}, {"join", file},
		{"restore-values", file, "-o", filepath.Join(dir, "v.yaml")},
	} {
		add("not a bundle", exitInput, file, args...)
	}
	add("missing input", exitInput, "values file", "install", good, "--key", pub, site[0], site[1], "-f", none)
	add("missing input", exitInput, none, "install", good, "--key", pub, site[0], site[1], "--set-file", "license="+none)
	add("missing input", exitInput, none, "values", good, site[0], site[1], "-f", none, "-o", filepath.Join(dir, "v.yaml"))
	add("missing input", exitInput, none, "lint", good, site[0], site[1], "--set-file", "license="+none)
	add("missing kubeconfig", exitPreflight, none, "support", "--kubeconfig", none, "-o", filepath.Join(dir, "s.tar.zst"))
	add("missing kubeconfig", exitPreflight, none, "install", good, "--key", pub, site[0], site[1], "--kubeconfig", none)
	add("missing kubeconfig", exitPreflight, none, "doctor", good, "--key", pub, site[0], site[1], "--kubeconfig", none)

	// Keys: missing, or not a key.
	add("missing key", exitKey, none, "build", "--chart", chart, "--key", none, "-o", filepath.Join(dir, "o.tar.zst"))
	add("missing key", exitKey, none, "public-key", "--key", none)
	add("not a key", exitKey, file, "public-key", "--key", file)
	add("not a key", exitKey, file, "build", "--chart", chart, "--key", file, "-o", filepath.Join(dir, "o.tar.zst"))
	for _, c := range []string{"verify", "install", "doctor", "push", "values", "lint"} {
		for class, k := range map[string]string{"missing key": none, "not a key": file} {
			args := []string{c, good, "--key", k}
			if c != "verify" {
				args = append(args, site...)
			}
			add(class, exitKey, k, args...)
		}
	}

	// Outputs that cannot be written, or must not be replaced.
	for _, out := range []string{noDir, underFile} {
		add("unwritable output", exitOutput, filepath.Dir(out), "build", "--chart", chart, "--key", key, "-o", out+".tar.zst")
		add("unwritable output", exitOutput, filepath.Dir(out), "join", split+".001", "-o", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "install", good, "--key", pub, site[0], site[1], "-o", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "install", good, "--key", pub, site[0], site[1], "--log-file", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "install", good, "--key", pub, site[0], site[1], "--backup-dir", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "values", good, site[0], site[1], "-o", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "restore-values", file, "-o", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "support", "-o", out, cluster[0], cluster[1])
		add("unwritable output", exitOutput, filepath.Dir(out), "keygen", "--output-prefix", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "public-key", "--key", key, "-o", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "approve", good, "--key", key, "--bundle-key", pub, "-o", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "export", good, "--key", pub, "--oci-layout", out)
		add("unwritable output", exitOutput, filepath.Dir(out), "export", good, "--key", pub, "--docker-archive", "-o", out, "--image", "x")
	}
	add("existing output", exitOutput, "never overwritten", "export", good, "--key", pub, "--docker-archive", "-o", file, "--image", "x")
	add("existing output", exitOutput, "never overwritten", "export", good, "--key", pub, "--oci-layout", dir)
	add("existing output", exitOutput, "--force", "build", "--chart", chart, "--key", key, "-o", file)
	add("existing output", exitOutput, "directory", "build", "--chart", chart, "--key", key, "-o", dir)
	add("existing output", exitOutput, "--force", "join", split+".001", "-o", file)
	add("existing output", exitOutput, "never overwritten", "restore-values", good, "-o", file)
	add("existing output", exitOutput, "never overwritten", "support", "-o", file, cluster[0], cluster[1])
	add("existing output", exitKey, oldKey, "keygen", "--output-prefix", strings.TrimSuffix(oldKey, ".key"))
	add("existing output", exitOutput, file, "public-key", "--key", key, "-o", file)

	before := listTree(t, dir)
	table := map[string]map[string][]int{} // class, command: the codes (go test -v prints it)
	for _, r := range rows {
		got := p7(t, "", r.args...)
		if table[r.class] == nil {
			table[r.class] = map[string][]int{}
		}
		if !slices.Contains(table[r.class][r.args[0]], got.code) {
			table[r.class][r.args[0]] = append(table[r.class][r.args[0]], got.code)
		}
		line := strings.TrimSpace(got.stderr)
		if got.code != r.code || strings.Contains(line, "\n") || !strings.Contains(line, r.want) {
			t.Errorf("%s: %q\n%v\nwant exit %d and one line with %q", r.class, r.args, got, r.code, r.want)
		}
		if after := listTree(t, dir); !slices.Equal(after, before) {
			t.Errorf("%s: %q left %v", r.class, r.args, after)
			for _, p := range after {
				if !slices.Contains(before, p) {
					os.RemoveAll(p)
				}
			}
		}
	}
	logTable(t, table)
}

func logTable(t *testing.T, table map[string]map[string][]int) {
	for _, class := range slices.Sorted(maps.Keys(table)) {
		var cells []string
		for _, cmd := range slices.Sorted(maps.Keys(table[class])) {
			cells = append(cells, fmt.Sprintf("%s %v", cmd, table[class][cmd]))
		}
		t.Logf("%-18s %s", class, strings.Join(cells, ", "))
	}
}

func listTree(t *testing.T, root string) []string {
	t.Helper()
	var paths []string
	filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	return paths
}
