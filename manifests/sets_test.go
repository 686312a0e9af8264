package manifests

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
)

// The same -f files and --set family, given to Helm's own values code and
// to AirgapValuesFor, give the same values once coalesced with the chart's
// defaults, as helm install does: lists, escaped commas, dotted keys,
// indexes into a file's list, null, JSON, literals, files.
func TestSetsAsHelm(t *testing.T) {
	c := mustLoad(t, fixtureDir)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.yaml", "t:\n  list: [a, b, c]\n  nested: {x: 1, keep: yes}\nsmtp:\n  port: 25\n")
	b := write("my,values b.yaml", "t:\n  nested: {w: 2}\n  list: [z]\n")
	note := write("note.txt", "line one\nline two, with a comma\n")
	for _, tc := range []struct {
		name  string
		files []string
		sets  Sets
	}{
		{"list", nil, Sets{Values: []string{"t.k={a,b}"}}},
		{"escaped comma", nil, Sets{Values: []string{`t.k=a\,b`}}},
		{"several in one", nil, Sets{Values: []string{"t.a.b=1,t.d=two,t.e=true"}}},
		{"dotted key", nil, Sets{Values: []string{`t.dotted\.key=v`}}},
		{"index into a file's list", []string{a}, Sets{Values: []string{"t.list[1]=x"}}},
		{"index past a file's list", []string{a}, Sets{Values: []string{"t.list[5]=x"}}},
		{"null", []string{a}, Sets{Values: []string{"t.nested.x=null", "smtp.useTls=null"}}},
		{"over a default", nil, Sets{Values: []string{"smtp.port=2525"}}},
		{"two files", []string{a, b}, Sets{Values: []string{"t.nested.z=3"}}},
		{"last wins", nil, Sets{Values: []string{"t.x=1", "t.x=2"}}},
		{"string", nil, Sets{StringValues: []string{"t.port=8080", "t.flag=true"}}},
		{"json", []string{a}, Sets{JSONValues: []string{`t.obj={"a":[1,2],"b":null}`, `t.list=[{"n":1}]`}}},
		{"literal", nil, Sets{LiteralValues: []string{"t.lit=a,b={c}"}}},
		{"file", nil, Sets{FileValues: []string{"t.text=" + note}}},
		{"kinds in Helm's order", nil, Sets{LiteralValues: []string{"t.o=literal"}, Values: []string{"t.o=set"}, JSONValues: []string{`t.o="json"`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var files []ValuesFile
			for _, f := range tc.files {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, ValuesFile{Name: f, Data: data})
			}
			ours, err := AirgapValuesFor(c, files, tc.sets, airgapOpts())
			if err != nil {
				t.Fatal(err)
			}
			helm, err := (&values.Options{
				ValueFiles: tc.files, Values: tc.sets.Values, StringValues: tc.sets.StringValues, FileValues: tc.sets.FileValues,
				JSONValues: tc.sets.JSONValues, LiteralValues: tc.sets.LiteralValues,
			}).MergeValues(getter.Providers{})
			if err != nil {
				t.Fatal(err)
			}
			want, err := chartutil.CoalesceValues(c.Chart, helm)
			if err != nil {
				t.Fatal(err)
			}
			got, err := chartutil.CoalesceValues(c.Chart, ours.Values)
			if err != nil {
				t.Fatal(err)
			}
			// Numbers compare by value: ours pass through values.airgap.yaml,
			// so they decode as a helm -f file's do (float64).
			for _, key := range []string{"t", "smtp"} {
				if !reflect.DeepEqual(asJSON(t, got[key]), asJSON(t, want[key])) {
					t.Errorf("%s: ours %#v\nhelm %#v", key, got[key], want[key])
				}
			}
		})
	}
}

func TestSetsErrorsAreHelms(t *testing.T) {
	c := mustLoad(t, fixtureDir)
	for _, s := range []Sets{{Values: []string{"t.k={a,b"}}, {JSONValues: []string{"t.k={nope"}}, {FileValues: []string{"t.k=/no/such/file"}}} {
		if _, err := AirgapValuesFor(c, nil, s, airgapOpts()); err == nil || !errors.Is(err, ErrInvalidValues) {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
