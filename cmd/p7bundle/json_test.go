package main

import (
	"encoding"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/urfave/cli/v2"
)

// jsonField is one key of a report: its dotted path ("images[].ref"), the
// JSON type, whether it may be left out, and the Go field it comes from.
type jsonField struct {
	path, kind string
	optional   bool
	field      reflect.StructField
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// jsonKind names a Go type as JSON; containers of structs end in "object".
func jsonKind(ty reflect.Type) string {
	switch {
	case ty.Kind() == reflect.Pointer:
		return jsonKind(ty.Elem())
	case ty.Implements(textMarshaler) || reflect.PointerTo(ty).Implements(textMarshaler):
		return "string"
	case ty.Implements(jsonMarshaler):
		return "any"
	}
	switch ty.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		if ty.Elem().Kind() == reflect.Uint8 {
			return "string (base64)"
		}
		return "array of " + jsonKind(ty.Elem())
	case reflect.Map:
		return "object of " + jsonKind(ty.Elem())
	case reflect.Struct:
		return "object"
	}
	return "any"
}

// jsonFields lists every key a value of ty can print, depth first.
func jsonFields(ty reflect.Type) []jsonField {
	var out []jsonField
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, prefix string) {
		for {
			switch ty.Kind() {
			case reflect.Pointer:
				ty = ty.Elem()
				continue
			case reflect.Slice, reflect.Array:
				ty, prefix = ty.Elem(), prefix+"[]"
				continue
			case reflect.Map:
				ty, prefix = ty.Elem(), prefix+".*"
				continue
			}
			break
		}
		if ty.Kind() != reflect.Struct || seen[ty] || jsonKind(ty) != "object" {
			return
		}
		seen[ty] = true
		defer delete(seen, ty)
		for i := 0; i < ty.NumField(); i++ {
			f := ty.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case name == "-", !f.IsExported() && !f.Anonymous:
				continue
			case f.Anonymous && name == "":
				walk(f.Type, prefix)
				continue
			case name == "":
				name = f.Name
			}
			path := strings.TrimPrefix(prefix+"."+name, ".")
			out = append(out, jsonField{path, jsonKind(f.Type), strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero"), f})
			walk(f.Type, path)
		}
	}
	walk(ty, "")
	return out
}

// Every JSON report names its keys in camelCase, however deep.
func TestJSONReportsAreCamelCase(t *testing.T) {
	for _, r := range append(jsonReports, struct {
		command string
		report  any
	}{"error", errorReport{}}) {
		for _, f := range jsonFields(reflect.TypeOf(r.report)) {
			last := f.path[strings.LastIndexAny(f.path, ".]")+1:]
			if unicode.IsUpper(rune(last[0])) {
				t.Errorf("%s: %s (Go field %s) is not camelCase", r.command, f.path, f.field.Name)
			}
		}
	}
}

// docs/JSON.md lists every key of every --json report, generated from the
// types the commands print (make man); every command with --json is there.
func TestJSONDocsAreCurrent(t *testing.T) {
	var b strings.Builder
	b.WriteString("<!-- Generated from the report types by `make man`; do not edit. -->\n\n")
	b.WriteString("# JSON reports\n\nWith `--json` a command prints one JSON object on stdout: its report when it succeeds;\n" +
		"when it fails before printing one, the error object below (the exit code, its kind from the README's\n" +
		"exit code table, and the line stderr shows). Keys are camelCase; `[]` is an element of an array, `*`\n" +
		"any key of an object; an optional key is left out when empty. New keys may be added; a key is never\n" +
		"renamed or removed within a major version.\n")
	section := func(title string, report any) {
		fmt.Fprintf(&b, "\n## %s\n\n| key | type | |\n|---|---|---|\n", title)
		for _, f := range jsonFields(reflect.TypeOf(report)) {
			opt := ""
			if f.optional {
				opt = "optional"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.path, f.kind, opt)
		}
	}
	section("Any command, on failure", errorReport{})
	documented := map[string]bool{}
	for _, r := range jsonReports {
		section("p7bundle "+r.command+" --json", r.report)
		documented[r.command] = true
	}
	for _, c := range newApp(&environment{}).Commands {
		hasJSON := slices.ContainsFunc(c.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), "json") })
		if hasJSON != documented[c.Name] {
			t.Errorf("%s: --json flag %v, in jsonReports %v", c.Name, hasJSON, documented[c.Name])
		}
	}
	path := filepath.Join(testenv.RepoRoot(), "docs", "JSON.md")
	if *updateDocs {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != b.String() {
		t.Errorf("%s is stale: run make man (%v)", path, err)
	}
}

// checkJSONDocumented fails the test when a --json output holds a key
// docs/JSON.md does not list for that command: p7 calls it on every run
// with --json, so each report the tests print is checked against the doc.
func checkJSONDocumented(t *testing.T, command, stdout string) {
	t.Helper()
	var v any
	if json.Unmarshal([]byte(stdout), &v) != nil {
		return // not JSON: the test that ran it says what is wrong
	}
	var report any = errorReport{}
	if obj, ok := v.(map[string]any); !ok || len(obj) != 1 || obj["error"] == nil {
		report = nil
		for _, r := range jsonReports {
			if r.command == command {
				report = r.report
			}
		}
		if report == nil {
			t.Errorf("%s printed JSON but is not in jsonReports", command)
			return
		}
	}
	known := map[string]bool{}
	for _, f := range jsonFields(reflect.TypeOf(report)) {
		known[f.path] = true
	}
	var walk func(any, string)
	walk = func(v any, prefix string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				p := strings.TrimPrefix(prefix+"."+k, ".")
				if !known[p] && known[prefix+".*"] {
					p = prefix + ".*"
				}
				if !known[p] {
					t.Errorf("%s --json: key %s is not in docs/JSON.md", command, p)
					continue
				}
				walk(e, p)
			}
		case []any:
			for _, e := range v {
				walk(e, prefix+"[]")
			}
		}
	}
	walk(v, "")
}
