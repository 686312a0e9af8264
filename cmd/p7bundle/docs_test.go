package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/internal/testing/testenv"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/CLI.md and docs/p7bundle.1 (make man)")

// docs/CLI.md and the man page are generated from the command definitions
// (make man); this fails when they are stale.
func TestCLIDocsAreCurrent(t *testing.T) {
	app := newApp(&environment{stdin: strings.NewReader(""), stdout: os.Stdout, raw: os.Stdout, stderr: os.Stderr})
	md, err := app.ToMarkdown()
	if err != nil {
		t.Fatal(err)
	}
	man, err := app.ToMan()
	if err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join(testenv.RepoRoot(), "docs")
	for name, want := range map[string]string{
		"CLI.md":     "<!-- Generated from the command definitions by `make man`; do not edit. -->\n\n" + md,
		"p7bundle.1": man,
	} {
		path := filepath.Join(docs, name)
		if *updateDocs {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != want {
			t.Errorf("%s is stale: run make man (%v)", path, err)
		}
	}
}

// Every command's --help shows a USAGE with its required flags and, where
// it has any, examples.
func TestEveryCommandHasUsage(t *testing.T) {
	app := newApp(&environment{stdin: strings.NewReader(""), stdout: os.Stdout, raw: os.Stdout, stderr: os.Stderr})
	for _, c := range app.Commands {
		if c.Name == "help" {
			continue
		}
		u := usageTexts[c.Name]
		if !strings.HasPrefix(u, "p7bundle "+c.Name) {
			t.Errorf("%s: no USAGE line", c.Name)
		}
		for _, f := range c.Flags {
			if r, ok := f.(interface{ IsRequired() bool }); ok && r.IsRequired() && !strings.Contains(u, "--"+f.Names()[0]) {
				t.Errorf("%s: USAGE hides the required --%s", c.Name, f.Names()[0])
			}
		}
		r := p7(t, "", c.Name, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, strings.SplitN(u, "\n", 2)[0]) {
			t.Errorf("%s --help: %v", c.Name, r)
		}
	}
}
