package manifests

import (
	"bytes"
	"fmt"
	"net/url"
	"reflect"
	"strconv"

	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
)

// Sets are Helm's --set family, applied over the -f files by Helm's own
// code and in Helm's order: --set-json, --set, --set-string, --set-file,
// --set-literal.
type Sets struct {
	Values, StringValues, FileValues, JSONValues, LiteralValues []string
}

func (s Sets) empty() bool {
	return len(s.Values)+len(s.StringValues)+len(s.FileValues)+len(s.JSONValues)+len(s.LiteralValues) == 0
}

// memScheme lets Helm's MergeValues read the -f files already in memory.
const memScheme = "p7bundle-values"

// HelmValues is what Helm makes of -f files and sets (before the chart's
// defaults): values.Options.MergeValues itself.
func HelmValues(files []ValuesFile, s Sets) (map[string]interface{}, error) {
	opts := values.Options{
		Values: s.Values, StringValues: s.StringValues, FileValues: s.FileValues,
		JSONValues: s.JSONValues, LiteralValues: s.LiteralValues,
	}
	for i := range files {
		opts.ValueFiles = append(opts.ValueFiles, memScheme+":"+strconv.Itoa(i))
	}
	mem := getter.Provider{Schemes: []string{memScheme}, New: func(...getter.Option) (getter.Getter, error) {
		return memGetter(files), nil
	}}
	m, err := opts.MergeValues(getter.Providers{mem})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidValues, err)
	}
	return m, nil
}

type memGetter []ValuesFile

func (g memGetter) Get(u string, _ ...getter.Option) (*bytes.Buffer, error) {
	p, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	i, err := strconv.Atoi(p.Opaque)
	if err != nil || i < 0 || i >= len(g) {
		return nil, fmt.Errorf("no values file %s", u)
	}
	return bytes.NewBuffer(g[i].Data), nil
}

// setsPatch is what the sets change in the files' values, as Helm applies
// them: whole values where they differ, mappings recursed into.
func setsPatch(files []ValuesFile, s Sets) (map[string]interface{}, error) {
	if s.empty() {
		return nil, nil
	}
	before, err := HelmValues(files, Sets{})
	if err != nil {
		return nil, err
	}
	after, err := HelmValues(files, s)
	if err != nil {
		return nil, err
	}
	return changed(before, after), nil
}

func changed(before, after map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, a := range after {
		b, had := before[k]
		am, aIsMap := a.(map[string]interface{})
		bm, bIsMap := b.(map[string]interface{})
		switch {
		case had && aIsMap && bIsMap:
			if sub := changed(bm, am); len(sub) > 0 {
				out[k] = sub
			}
		case !had || !reflect.DeepEqual(a, b):
			out[k] = a
		}
	}
	return out
}
