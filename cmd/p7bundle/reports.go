package main

import (
	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// jsonReports is what each command's --json prints on success, in the
// order docs/JSON.md lists them; docs/JSON.md is generated from it.
var jsonReports = []struct {
	command string
	report  any
}{
	{"build", buildReport{}},
	{"verify", bundle.Report{}},
	{"inspect", bundle.Manifest{}},
	{"diff", bundle.Diff{}},
	{"join", joinReport{}},
	{"install", installer.Report{}},
	{"doctor", installer.DoctorReport{}},
	{"push", mirror.PushResult{}},
	{"values", valuesReport{}},
	{"lint", installer.LintResult{}},
	{"support", installer.SupportReport{}},
	// serve --json: one access log line per request.
	{"serve", mirror.AccessEntry{}},
	{"export", installer.Exported{}},
	{"version", versionReport{}},
}

// errorReport is what --json prints when a command fails before its report.
type errorReport struct {
	Error struct {
		Code    int    `json:"code"`
		Kind    string `json:"kind"`
		Message string `json:"message"`
	} `json:"error"`
}

type joinReport struct {
	Bundle string `json:"bundle"`
}

// valuesReport says what values wrote and moved; never the values (they
// hold the registry password).
type valuesReport struct {
	Output    string                `json:"output"`
	SitePath  string                `json:"sitePath"`
	Rewritten []string              `json:"rewritten"`
	Repointed []manifests.Repointed `json:"repointed"`
	TagForms  []string              `json:"tagForms"`
}

type versionReport struct {
	Version      string `json:"version"`
	Commit       string `json:"commit,omitempty"`
	GoVersion    string `json:"goVersion"`
	Platform     string `json:"platform"`
	BundleFormat int    `json:"bundleFormat"` // the one it reads and writes
}
