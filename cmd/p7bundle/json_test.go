package main

import (
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/mirror"
)

// Every JSON report names its keys in camelCase: each exported field of
// every type a --json prints, however deep, has a lowercase json name.
func TestJSONReportsAreCamelCase(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Map || ty.Kind() == reflect.Array {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] || ty.PkgPath() == "time" {
			return
		}
		seen[ty] = true
		for i := 0; i < ty.NumField(); i++ {
			f := ty.Field(i)
			tag := f.Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			switch {
			case name == "-", !f.IsExported() && !f.Anonymous:
				continue
			case f.Anonymous && name == "":
				walk(f.Type, path)
				continue
			case name == "" || unicode.IsUpper(rune(name[0])):
				t.Errorf("%s.%s (%s): json name %q is not camelCase", path, f.Name, ty, tag)
			}
			walk(f.Type, path+"."+name)
		}
	}
	for name, v := range map[string]any{
		"verify": bundle.Report{}, "inspect": bundle.Manifest{}, "diff": bundle.Diff{}, "build": buildReport{},
		"push": mirror.PushResult{}, "lint": installer.LintResult{}, "doctor": installer.DoctorReport{},
		"install": installer.Report{}, "support": installer.SupportReport{},
	} {
		walk(reflect.TypeOf(v), name)
	}
}
