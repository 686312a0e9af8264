package manifests

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/p7bundle/p7bundle/internal/imageref"
)

// UserValues returns what an admin chose in a deployed release's values:
// config minus every value equal to a chart default (as written, or moved
// to the site registry), minus registry.url/username/password (set anew on
// every install) and minus the top-level keys in drop (the secrets, kept
// apart). values.airgap.yaml starts as the whole chart values.yaml, so
// without this an upgrade would pin last month's defaults.
func UserValues(config map[string]interface{}, defaults []map[string]interface{}, sourceRegistry, sitePath string, drop ...string) map[string]interface{} {
	if sourceRegistry == "" {
		sourceRegistry = DefaultSourceRegistry
	}
	cfg := copyValues(config)
	for _, k := range drop {
		delete(cfg, k)
	}
	if reg, ok := cfg["registry"].(map[string]interface{}); ok {
		for _, k := range []string{"url", "username", "password"} {
			delete(reg, k)
		}
	}
	re := hostPattern(sourceRegistry)
	var defs []interface{}
	for _, d := range defaults {
		d = copyValues(d)
		defs = append(defs, d, rewriteAll(d, re, sitePath))
	}
	out, _ := pruneDefaults(cfg, defs).(map[string]interface{})
	if out == nil {
		out = map[string]interface{}{}
	}
	return out
}

// pruneDefaults drops from v what equals one of defs; nil when nothing is left.
func pruneDefaults(v interface{}, defs []interface{}) interface{} {
	if m, ok := v.(map[string]interface{}); ok {
		out := map[string]interface{}{}
		for k, e := range m {
			var sub []interface{}
			for _, d := range defs {
				if dm, ok := d.(map[string]interface{}); ok {
					if de, has := dm[k]; has {
						sub = append(sub, de)
					}
				}
			}
			if kept := pruneDefaults(e, sub); kept != nil {
				out[k] = kept
			}
		}
		if len(out) == 0 { // {} over a default map changes nothing in Helm
			return nil
		}
		return out
	}
	for _, d := range defs {
		if reflect.DeepEqual(v, d) || tagOf(v, d) {
			return nil
		}
	}
	return v
}

// tagOf says whether v is the untagged image d with a tag written out,
// as install writes the tag build defaulted.
func tagOf(v, d interface{}) bool {
	vs, ok := v.(string)
	ds, ok2 := d.(string)
	if !ok || !ok2 || !strings.Contains(ds, "/") {
		return false
	}
	repo, tag, dgst := splitRef(vs)
	_, dtag, ddgst := splitRef(ds)
	return tag != "" && dgst == "" && dtag == "" && ddgst == "" && repo == ds
}

// Repointed is an image value moved from another release's tag to this bundle's.
type Repointed struct {
	Path string `json:"path"`
	From string `json:"from"`
	To   string `json:"to"`
}

// bundleTags maps each repository path of a bundle (after the source
// registry host) to its tags and digests.
type bundleTags map[string][]string

func newBundleTags(refs []string, sourceRegistry string) bundleTags {
	bt := bundleTags{}
	for _, r := range refs {
		repo, tag, dgst := splitRef(strings.TrimPrefix(r, sourceRegistry+"/"))
		for _, v := range []string{tag, dgst} {
			if v != "" {
				bt[repo] = append(bt[repo], v)
			}
		}
	}
	return bt
}

// splitRef cuts "repo[:tag][@digest]" with the one reference parser.
func splitRef(ref string) (repo, tag, dgst string) {
	repo, tag, d := imageref.Split(ref)
	return repo, tag, string(d)
}

// only returns the bundle's one tag for repo when tag is not one of the
// bundle's; "" when there is nothing (or nothing unambiguous) to move to.
func (bt bundleTags) only(repo, tag string) string {
	have := bt[repo]
	for _, t := range have {
		if t == tag {
			return ""
		}
	}
	var tags []string
	for _, t := range have {
		if !strings.Contains(t, ":") { // not a digest
			tags = append(tags, t)
		}
	}
	if len(tags) != 1 {
		return ""
	}
	return tags[0]
}

// repointSite finds, in merged values, every image under sitePath whose
// repository this bundle carries under another tag, and returns the value
// paths with the string or tag to set there.
func repointSite(merged map[string]interface{}, sitePath string, bt bundleTags) (sets []pathValue, moved []Repointed) {
	siteRe := refPattern(sitePath)
	walk(merged, nil, func(path []interface{}, v interface{}) []string {
		switch t := v.(type) {
		case map[string]interface{}:
			full, tag, ok := imageMapRepo(t)
			if !ok {
				return nil
			}
			if rel, ok := strings.CutPrefix(full, sitePath+"/"); ok {
				if to := bt.only(rel, tag); tag != "" && to != "" {
					p := append(slices.Clip(path), "tag")
					sets = append(sets, pathValue{p, to})
					moved = append(moved, Repointed{Path: pathString(p), From: tag, To: to})
				}
			}
			return []string{"tag"} // the map's tag is handled with the map
		case string:
			s := t
			for _, m := range siteRe.FindAllStringSubmatch(t, -1) {
				repo, tag, dgst := splitRef(strings.TrimPrefix(m[1], sitePath+"/"))
				if to := bt.only(repo, tag); tag != "" && dgst == "" && to != "" {
					s = strings.Replace(s, m[1], sitePath+"/"+repo+":"+to, 1)
				}
			}
			if s != t && firstIndex(path) < 0 {
				sets = append(sets, pathValue{path, s})
				moved = append(moved, Repointed{Path: pathString(path), From: t, To: s})
			}
		}
		return nil
	})
	return sets, moved
}

// imageMapRepo reads a {registry?, repository, tag?} value as the full
// repository and its tag.
func imageMapRepo(m map[string]interface{}) (repo, tag string, ok bool) {
	repo, _ = m["repository"].(string)
	if repo == "" {
		return "", "", false
	}
	if reg, _ := m["registry"].(string); reg != "" {
		repo = strings.TrimRight(reg, "/") + "/" + strings.TrimLeft(repo, "/")
	}
	tag, _ = scalarString(m["tag"])
	return repo, tag, true
}

type pathValue struct {
	path  []interface{}
	value interface{}
}

// secretKey matches value keys whose content is never printed.
var secretKey = regexp.MustCompile(`(?i)pass|secret|token|credential|private|apikey|api_key|auth`)

// DiffValues lists the leaf changes from old to new values ("+ path: v",
// "~ path: a -> b", "- path"), sorted by path. Under keys that look
// secret-bearing a change shows as "(changed)" only; the top-level keys in
// secrets (the deployment secrets, kept apart) are left out.
func DiffValues(old, new map[string]interface{}, secrets ...string) []string {
	a, b := map[string]interface{}{}, map[string]interface{}{}
	old, new = copyValues(old), copyValues(new)
	for _, k := range secrets {
		delete(old, k)
		delete(new, k)
	}
	flatten(old, nil, a)
	flatten(new, nil, b)
	hidden := secretKey.MatchString
	show := func(p string, v interface{}) string {
		if hidden(p) {
			return "(set)"
		}
		return fmt.Sprintf("%v", v)
	}
	var out []string
	for p, nv := range b {
		ov, had := a[p]
		switch {
		case !had:
			out = append(out, "+ "+p+": "+show(p, nv))
		case !reflect.DeepEqual(ov, nv) && hidden(p):
			out = append(out, "~ "+p+": (changed)")
		case !reflect.DeepEqual(ov, nv):
			out = append(out, fmt.Sprintf("~ %s: %v -> %v", p, ov, nv))
		}
	}
	for p := range a {
		if _, has := b[p]; !has {
			out = append(out, "- "+p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][2:] < out[j][2:] })
	return out
}

func flatten(v interface{}, path []interface{}, out map[string]interface{}) {
	switch t := v.(type) {
	case map[string]interface{}:
		if len(t) == 0 && len(path) > 0 {
			out[pathString(path)] = t
		}
		for k, e := range t {
			flatten(e, append(append([]interface{}{}, path...), k), out)
		}
	case []interface{}:
		if len(t) == 0 {
			out[pathString(path)] = t
		}
		for i, e := range t {
			flatten(e, append(append([]interface{}{}, path...), i), out)
		}
	default:
		out[pathString(path)] = t
	}
}
