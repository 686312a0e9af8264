package manifests

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
)

// notInName is what may stand before a registry host that begins a
// reference: not a name character, and not '/', so "https://host/docs"
// (a URL) and "other.host/host/x" (a path) are not references to host.
// Discovery, the values rewrite and lint all start a match this way.
const notInName = `[^A-Za-z0-9._/-]`

// refPattern matches references to host inside any string: the vendor
// guide's `registry\.pseven\.io/[^:]+`, tightened to reference characters and
// extended with an optional tag and digest. The host must not continue a
// longer host name or a URL path (so "https://host/..." is not an image).
func refPattern(host string) *regexp.Regexp {
	return regexp.MustCompile(`(?:^|` + notInName + `)(` + regexp.QuoteMeta(host) +
		`/[A-Za-z0-9._/-]*[A-Za-z0-9]` + // repository; uppercase is matched to be reported, not cut
		`(?::[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?)?` + // tag; a final '.' or '-' is taken as punctuation
		`(?:@[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,})?)`) // digest
}

// FindRegistryRefs returns every reference to host (a registry host,
// optionally with a path prefix) in s, as written: "host/repo", with ":tag"
// and/or "@digest" when present.
func FindRegistryRefs(s, host string) []string {
	var out []string
	for _, m := range refPattern(host).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// valueImages collects the references to host in the values of ch and,
// recursively, of each of its subcharts (enabled or not: a disabled
// component can be enabled at install time, and its image must be there).
func valueImages(ch *chart.Chart, host string) ([]foundRef, error) {
	s := &valueScanner{re: refPattern(host), host: host}
	s.chart(ch, nil, nil)
	return s.found, s.err
}

type valueScanner struct {
	re    *regexp.Regexp
	host  string
	found []foundRef
	err   error
}

// chart scans ch's own values. prefix is the path of ch's values as seen
// from the top-level chart ("" for it, "sub" for a subchart), chain the
// subchart names from the top.
func (s *valueScanner) chart(ch *chart.Chart, prefix []interface{}, chain []string) {
	suffix := ""
	if len(chain) > 0 {
		suffix = " (subchart " + strings.Join(chain, "/") + ")"
	}
	s.scan(ch.Values, prefix, suffix)

	deps := append([]*chart.Chart(nil), ch.Dependencies()...)
	sort.Slice(deps, func(i, j int) bool { return deps[i].Name() < deps[j].Name() })
	for _, sub := range deps {
		// A subchart's values live under its alias, or its name.
		keys := subchartKeys(ch, sub.Name())
		for _, k := range keys {
			s.chart(sub, append(slices.Clip(prefix), k), append(slices.Clip(chain), k))
		}
	}
}

func subchartKeys(parent *chart.Chart, name string) []string {
	var keys []string
	if parent.Metadata != nil {
		for _, d := range parent.Metadata.Dependencies {
			if d != nil && d.Name == name && d.Alias != "" {
				keys = append(keys, d.Alias)
			}
		}
	}
	if len(keys) == 0 {
		keys = []string{name}
	}
	sort.Strings(keys)
	return keys
}

func (s *valueScanner) add(ref string, path []interface{}, suffix string) {
	s.found = append(s.found, foundRef{ref: ref, source: "values:" + pathString(path) + suffix})
}

// scan collects the references below v: strings, and image maps whose
// keys are then not scanned again.
func (s *valueScanner) scan(v interface{}, path []interface{}, suffix string) {
	walk(v, path, func(path []interface{}, v interface{}) []string {
		if s.err != nil {
			return nil
		}
		switch n := v.(type) {
		case map[string]interface{}:
			ref, keys, ok, err := s.imageMap(n)
			if err != nil {
				s.err = fmt.Errorf("values:%s%s: %w", pathString(path), suffix, err)
			} else if ok {
				s.add(ref, path, suffix)
			}
			return keys
		case string:
			for _, m := range s.re.FindAllStringSubmatch(n, -1) {
				s.add(m[1], path, suffix)
			}
		}
		return nil
	})
}

// imageMap recognises {repository, tag?, digest?} and {registry, repository,
// tag?, digest?} maps that point at the source registry. It returns the
// reference and the keys it used.
func (s *valueScanner) imageMap(m map[string]interface{}) (ref string, keys []string, ok bool, err error) {
	repo, _ := m["repository"].(string)
	repo = strings.TrimSpace(repo)
	if repo == "" {
		return "", nil, false, nil
	}
	keys = []string{"repository"}
	full := repo
	if reg, _ := m["registry"].(string); strings.TrimSpace(reg) != "" {
		full = strings.TrimRight(strings.TrimSpace(reg), "/") + "/" + strings.TrimLeft(repo, "/")
		keys = append(keys, "registry")
	}
	if !strings.HasPrefix(full, s.host+"/") {
		return "", nil, false, nil
	}
	if t, present := m["tag"]; present {
		keys = append(keys, "tag")
		tag, err := scalarString(t)
		if err != nil {
			return "", nil, false, fmt.Errorf("tag: %w", err)
		}
		if tag != "" {
			full += ":" + tag
		}
	}
	if d, present := m["digest"]; present {
		keys = append(keys, "digest")
		dig, err := scalarString(d)
		if err != nil {
			return "", nil, false, fmt.Errorf("digest: %w", err)
		}
		if dig != "" {
			full += "@" + dig
		}
	}
	return full, keys, true, nil
}

// scalarString turns a YAML scalar into a string. Helm decodes numbers as
// float64, so an unquoted `tag: 7` arrives as 7.0; quote tags in values.
func scalarString(v interface{}) (string, error) {
	switch t := v.(type) {
	case nil:
		return "", nil
	case string:
		return strings.TrimSpace(t), nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	case int:
		return strconv.Itoa(t), nil
	case int64:
		return strconv.FormatInt(t, 10), nil
	default:
		return "", fmt.Errorf("%w: %v is a %T, want a string", ErrInvalidReference, v, v)
	}
}
