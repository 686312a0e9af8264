package main

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"
	"github.com/urfave/cli/v2"
	"helm.sh/helm/v3/pkg/cli/values"
)

// helmValueFlags are helm's own value flags (cmd/helm/flags.go,
// addValueOptionsFlags, v3.22.0): what an admin's helm habits expect.
func helmValueFlags(f *pflag.FlagSet, v *values.Options) {
	f.StringSliceVarP(&v.ValueFiles, "values", "f", []string{}, "")
	f.StringArrayVar(&v.Values, "set", []string{}, "")
	f.StringArrayVar(&v.StringValues, "set-string", []string{}, "")
	f.StringArrayVar(&v.FileValues, "set-file", []string{}, "")
	f.StringArrayVar(&v.JSONValues, "set-json", []string{}, "")
	f.StringArrayVar(&v.LiteralValues, "set-literal", []string{}, "")
}

// The same argv gives our commands exactly the files and sets helm's flags
// give helm (which manifests.TestSetsAsHelm then merges alike).
func TestValuesFlagsParseAsHelm(t *testing.T) {
	for _, argv := range [][]string{
		{"--set", "k={a,b}"},
		{"--set", `k=a\,b`},
		{"--set", "a=1,b=2", "--set", "c=3"},
		{"--set-string", "a=1,b=2"},
		{"--set-json", `a={"x":[1,2]}`},
		{"--set-file", "k=my,file.txt"},
		{"--set-literal", "k=a,b={c}"},
		{"-f", "a.yaml,b.yaml"},
		{"-f", `"my,values.yaml"`},
		{"-f", "with space.yaml", "--values", "c.yaml"},
		{"--values=x.yaml,y.yaml", "--set=k=v"},
		{"-f", "a.yaml", "--set", "k=1", "-f", "b.yaml", "--set-string", "s=2"},
	} {
		var want values.Options
		fs := pflag.NewFlagSet("helm", pflag.ContinueOnError)
		helmValueFlags(fs, &want)
		if err := fs.Parse(argv); err != nil {
			t.Fatalf("helm %q: %v", argv, err)
		}
		var files []string
		var got values.Options
		app := &cli.App{Flags: valuesFlags(), Action: func(c *cli.Context) error {
			f, s := valuesArgs(c)
			files, got = f, values.Options{Values: s.Values, StringValues: s.StringValues, FileValues: s.FileValues, JSONValues: s.JSONValues, LiteralValues: s.LiteralValues}
			return nil
		}}
		if err := app.Run(append([]string{"p7bundle"}, argv...)); err != nil {
			t.Fatalf("ours %q: %v", argv, err)
		}
		got.ValueFiles = files
		for _, f := range []struct {
			name      string
			got, want []string
		}{
			{"-f", got.ValueFiles, want.ValueFiles}, {"--set", got.Values, want.Values}, {"--set-string", got.StringValues, want.StringValues},
			{"--set-file", got.FileValues, want.FileValues}, {"--set-json", got.JSONValues, want.JSONValues}, {"--set-literal", got.LiteralValues, want.LiteralValues},
		} {
			if !slices.Equal(f.got, f.want) {
				t.Errorf("%q: %s = %q, helm %q", argv, f.name, f.got, f.want)
			}
		}
	}
}
