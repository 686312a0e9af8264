package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	"helm.sh/helm/v3/pkg/chartutil"
	sigsyaml "sigs.k8s.io/yaml"
)

// ErrInvalidValues means an admin's values file or --set does not parse.
var ErrInvalidValues = errors.New("invalid values")

// ValuesFile is one -f file.
type ValuesFile struct {
	Name string
	Data []byte
}

// Sizing is what the guide derives from the worker nodes.
type Sizing struct {
	Workers  int
	MemoryMi int64 // half a worker's RAM
	CPUMilli int64 // half a worker's CPUs
}

// ValuesOptions say where the images now are.
type ValuesOptions struct {
	SourceRegistry     string // default registry.pseven.io
	SiteRegistry       string // HOST[:PORT]
	Prefix             string // repository path the images were pushed under
	Username, Password string // site registry credentials for registry.*
	// Sizing, when set, fills the sizing.* values the admin left unset.
	Sizing *Sizing
	// Carried are the running release's user values (see UserValues): an
	// upgrade starts from them, under the admin's -f files and --set.
	Carried map[string]interface{}
	// BundleImages are the bundle's source references: an image value under
	// the site registry with another tag of one of their repositories is
	// moved to the bundle's tag.
	BundleImages []string
}

// AirgapValues is the outcome of AirgapValuesFor.
type AirgapValues struct {
	// Document is values.airgap.yaml: the admin's first -f file (or the
	// chart's values.yaml) with its comments and key order, plus every
	// change below. It holds the registry password: write it 0600.
	Document []byte
	// Values is Document decoded: what the install passes to Helm.
	Values map[string]interface{}
	// Rewritten lists the value paths whose source-registry references moved.
	Rewritten []string
	// Filled lists sizing values derived from the cluster ("path=value").
	Filled []string
	// Repointed lists site-registry image values moved to this bundle's tags.
	Repointed []Repointed
	// TagForms says, for each untagged image value, whether the tag build
	// defaulted was written out or left to the chart's template.
	TagForms []string
}

// SitePath is where the images live: HOST[:PORT][/PREFIX].
func SitePath(siteRegistry, prefix string) string {
	if p := strings.Trim(prefix, "/"); p != "" {
		return siteRegistry + "/" + p
	}
	return siteRegistry
}

// hostPattern matches host where it stands alone: not inside a longer
// host name ("myregistry.pseven.io", "registry.pseven.io.evil") and not in
// a URL ("https://registry.pseven.io/docs" names no image), as discovery's
// refPattern: what the rewrite moves and lint reports is what build bundled.
func hostPattern(host string) *regexp.Regexp {
	return regexp.MustCompile(`(^|` + notInName + `)` + regexp.QuoteMeta(host) + `($|[^A-Za-z0-9.-])`)
}

// AirgapValuesFor builds the install's values: chart defaults, then the
// admin's -f files and --set, with every reference to the source registry
// moved to the site registry, registry.* set, and sizing filled.
func AirgapValuesFor(c *Chart, files []ValuesFile, sets Sets, opts ValuesOptions) (*AirgapValues, error) {
	if opts.SourceRegistry == "" {
		opts.SourceRegistry = DefaultSourceRegistry
	}
	doc, admin, err := adminDocument(c, files, sets, opts.Carried)
	if err != nil {
		return nil, err
	}
	root := doc.Content[0]
	var adminMap map[string]interface{}
	if err := decodeNode(admin, &adminMap); err != nil {
		return nil, err
	}
	var docMap map[string]interface{}
	if err := decodeNode(doc, &docMap); err != nil {
		return nil, err
	}
	merged, err := chartutil.CoalesceValues(c.Chart, docMap)
	if err != nil {
		return nil, fmt.Errorf("%w: merging with chart defaults: %v", ErrInvalidValues, err)
	}
	site := SitePath(opts.SiteRegistry, opts.Prefix)
	re := hostPattern(opts.SourceRegistry)
	out := &AirgapValues{}
	var walkErr error
	var tagged []tagForm
	walkValues(merged.AsMap(), nil, func(path []interface{}, s string) {
		if walkErr != nil || !re.MatchString(s) {
			return
		}
		moved := re.ReplaceAllString(s, "${1}"+site+"${2}")
		// Lists are replaced whole: the admin's file may not have them.
		if i := firstIndex(path); i >= 0 {
			list := lookup(merged.AsMap(), path[:i])
			walkErr = setPath(root, path[:i], rewriteAll(list, re, site))
		} else if untagged(s, opts.SourceRegistry) && len(opts.BundleImages) > 0 {
			// The tag build defaulted, written out; chooseTagForms may take it back.
			tagged = append(tagged, tagForm{path: path, untagged: moved, tagged: moved + ":" + c.AppVersion})
			walkErr = setPath(root, path, moved+":"+c.AppVersion)
		} else {
			walkErr = setPath(root, path, moved)
		}
		out.Rewritten = append(out.Rewritten, pathString(path))
	})
	if walkErr != nil {
		return nil, walkErr
	}
	if len(opts.BundleImages) > 0 {
		var rewritten map[string]interface{}
		if err := decodeNode(doc, &rewritten); err != nil {
			return nil, err
		}
		now, err := chartutil.CoalesceValues(c.Chart, rewritten)
		if err != nil {
			return nil, fmt.Errorf("%w: merging with chart defaults: %v", ErrInvalidValues, err)
		}
		sets, moved := repointSite(now.AsMap(), site, newBundleTags(opts.BundleImages, opts.SourceRegistry))
		for _, s := range sets {
			if err := setPath(root, s.path, s.value); err != nil {
				return nil, err
			}
		}
		out.Repointed = moved
	}
	sets2 := []struct {
		path  []interface{}
		value interface{}
	}{
		{[]interface{}{"registry", "url"}, site},
		{[]interface{}{"registry", "username"}, opts.Username},
		{[]interface{}{"registry", "password"}, opts.Password},
	}
	for _, s := range sets2 {
		if err := setPath(root, s.path, s.value); err != nil {
			return nil, err
		}
	}
	if z := opts.Sizing; z != nil && z.Workers > 0 {
		fills := []struct {
			path  []interface{}
			value interface{}
		}{
			{[]interface{}{"sizing", "htcondorexecuteReplicas"}, z.Workers},
			{[]interface{}{"sizing", "htcondorexecuteResources", "requests", "memory"}, fmt.Sprintf("%dMi", z.MemoryMi)},
			{[]interface{}{"sizing", "htcondorexecuteResources", "requests", "cpu"}, fmt.Sprintf("%dm", z.CPUMilli)},
		}
		for _, f := range fills {
			if v := lookup(adminMap, f.path); v != nil && v != "" {
				continue
			}
			if err := setPath(root, f.path, f.value); err != nil {
				return nil, err
			}
			out.Filled = append(out.Filled, fmt.Sprintf("%s=%v", pathString(f.path), f.value))
		}
	}
	if len(tagged) > 0 {
		if out.TagForms, err = chooseTagForms(c, doc, tagged, LintOptions{SourceRegistry: opts.SourceRegistry, SitePath: site, BundleImages: opts.BundleImages}); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	enc.Close()
	out.Document = buf.Bytes()
	if err := sigsyaml.Unmarshal(out.Document, &out.Values); err != nil {
		return nil, fmt.Errorf("%w: re-reading generated values: %v", ErrInvalidValues, err)
	}
	if out.Values == nil {
		out.Values = map[string]interface{}{}
	}
	return out, nil
}

// tagForm is an untagged image value in its two possible site forms.
type tagForm struct {
	path             []interface{}
	untagged, tagged string
}

// untagged says whether s is exactly one source reference with neither tag nor digest.
func untagged(s, sourceRegistry string) bool {
	refs := FindRegistryRefs(s, sourceRegistry)
	if len(refs) != 1 || refs[0] != strings.TrimSpace(s) {
		return false
	}
	_, tag, dgst := splitRef(refs[0])
	return tag == "" && dgst == ""
}

// chooseTagForms renders the chart with each untagged value written both
// ways and keeps, per value, the form the lint finds fewer offenders with:
// the explicit tag unless the template appends one itself. A template
// that looks for ':' to decide whether to append a tag breaks on a site
// registry with a port; one that always appends gets two tags.
func chooseTagForms(c *Chart, doc *yaml.Node, forms []tagForm, lint LintOptions) ([]string, error) {
	count := func() (int, error) {
		var vals map[string]interface{}
		if err := decodeNode(doc, &vals); err != nil {
			return 0, err
		}
		_, offenders, err := AirgapLint(c, vals, lint)
		return len(offenders), err
	}
	best, err := count()
	if err != nil {
		return nil, err
	}
	var said []string
	for _, f := range forms {
		if err := setPath(doc.Content[0], f.path, f.untagged); err != nil {
			return nil, err
		}
		n, err := count()
		if err != nil {
			return nil, err
		}
		if n < best {
			best = n
			said = append(said, fmt.Sprintf("%s: left untagged (%s): the chart adds the tag itself", pathString(f.path), f.untagged))
			continue
		}
		if err := setPath(doc.Content[0], f.path, f.tagged); err != nil {
			return nil, err
		}
		said = append(said, fmt.Sprintf("%s: tag written out (%s)", pathString(f.path), f.tagged))
	}
	return said, nil
}

// adminDocument returns the base document (first -f file, else the chart's
// values.yaml) with the other files and --set merged in, and a document
// of only what the admin set.
func adminDocument(c *Chart, files []ValuesFile, sets Sets, carried map[string]interface{}) (doc, admin *yaml.Node, err error) {
	parse := func(name string, data []byte) (*yaml.Node, error) {
		var n yaml.Node
		if err := yaml.Unmarshal(data, &n); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidValues, name, err)
		}
		if n.Kind == 0 { // empty file
			n = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
		}
		if len(n.Content) != 1 || n.Content[0].Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%w: %s: top level is not a map", ErrInvalidValues, name)
		}
		return &n, nil
	}
	admin = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	for i, f := range files {
		n, err := parse(f.Name, f.Data)
		if err != nil {
			return nil, nil, err
		}
		if i == 0 {
			doc = n
		} else {
			mergeNode(doc.Content[0], n.Content[0])
		}
		n2, _ := parse(f.Name, f.Data)
		mergeNode(admin.Content[0], n2.Content[0])
	}
	if doc == nil {
		var base []byte
		for _, f := range c.Chart.Raw {
			if f.Name == chartutil.ValuesfileName {
				base = f.Data
			}
		}
		if doc, err = parse(c.FileName+":values.yaml", base); err != nil {
			return nil, nil, err
		}
	}
	if len(carried) > 0 {
		var n yaml.Node
		if err := n.Encode(carried); err != nil {
			return nil, nil, err
		}
		if len(files) > 0 {
			underlayNode(doc.Content[0], &n) // every -f file outranks them
		} else {
			mergeNode(doc.Content[0], &n) // they outrank the chart's defaults
		}
		var n2 yaml.Node
		if err := n2.Encode(carried); err != nil {
			return nil, nil, err
		}
		underlayNode(admin.Content[0], &n2)
	}
	setMap, err := setsPatch(files, sets)
	if err != nil {
		return nil, nil, err
	}
	if len(setMap) > 0 {
		for _, target := range []*yaml.Node{doc, admin} {
			var n yaml.Node
			if err := n.Encode(setMap); err != nil {
				return nil, nil, err
			}
			mergeNode(target.Content[0], &n)
		}
	}
	return doc, admin, nil
}

func decodeNode(n *yaml.Node, v *map[string]interface{}) error {
	var buf bytes.Buffer
	if err := yaml.NewEncoder(&buf).Encode(n); err != nil {
		return err
	}
	if err := sigsyaml.Unmarshal(buf.Bytes(), v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidValues, err)
	}
	if *v == nil {
		*v = map[string]interface{}{}
	}
	return nil
}

// mergeNode overlays mapping src onto mapping dst, keeping dst's comments.
func mergeNode(dst, src *yaml.Node) {
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		if j := keyIndex(dst, k.Value); j >= 0 {
			old := dst.Content[j+1]
			if old.Kind == yaml.MappingNode && v.Kind == yaml.MappingNode {
				mergeNode(old, v)
				continue
			}
			replaceNode(old, v)
			continue
		}
		dst.Content = append(dst.Content, k, v)
	}
}

// underlayNode adds to mapping dst what of src it lacks, recursively:
// src is the weaker layer.
func underlayNode(dst, src *yaml.Node) {
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		j := keyIndex(dst, k.Value)
		switch {
		case j < 0:
			dst.Content = append(dst.Content, k, v)
		case dst.Content[j+1].Kind == yaml.MappingNode && v.Kind == yaml.MappingNode:
			underlayNode(dst.Content[j+1], v)
		}
	}
}

func keyIndex(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// replaceNode puts v in old's place, keeping the comments around old.
func replaceNode(old, v *yaml.Node) {
	head, line, foot := old.HeadComment, old.LineComment, old.FootComment
	*old = *v
	if old.HeadComment == "" {
		old.HeadComment = head
	}
	if old.LineComment == "" {
		old.LineComment = line
	}
	if old.FootComment == "" {
		old.FootComment = foot
	}
}

// setPath sets a value at a key path in a mapping node, creating maps.
func setPath(m *yaml.Node, path []interface{}, value interface{}) error {
	var v yaml.Node
	if err := v.Encode(value); err != nil {
		return err
	}
	for i, seg := range path {
		key, ok := seg.(string)
		if !ok || m.Kind != yaml.MappingNode {
			return fmt.Errorf("%w: cannot set %s: %s is not a map", ErrInvalidValues, pathString(path), pathString(path[:i]))
		}
		j := keyIndex(m, key)
		last := i == len(path)-1
		switch {
		case j < 0 && last:
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, &v)
			return nil
		case j < 0:
			child := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, child)
			m = child
		case last:
			replaceNode(m.Content[j+1], &v)
			return nil
		default:
			m = m.Content[j+1]
			if m.Kind == yaml.ScalarNode && (m.Tag == "!!null" || m.Value == "") {
				*m = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", HeadComment: m.HeadComment, LineComment: m.LineComment}
			}
		}
	}
	return nil
}

// walkValues calls visit for every string leaf with its path.
func walkValues(v interface{}, path []interface{}, visit func([]interface{}, string)) {
	walk(v, path, func(path []interface{}, v interface{}) []string {
		if s, ok := v.(string); ok {
			visit(path, s)
		}
		return nil
	})
}

// walk is the one values walker: it visits v and everything below it,
// depth-first, map keys in sorted order, each node with its path. For a
// map, visit returns the keys not to descend into.
func walk(v interface{}, path []interface{}, visit func(path []interface{}, v interface{}) (skip []string)) {
	skip := visit(path, v)
	switch t := v.(type) {
	case map[string]interface{}:
		keys := make([]string, 0, len(t))
		for k := range t {
			if !slices.Contains(skip, k) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			walk(t[k], append(slices.Clip(path), k), visit)
		}
	case []interface{}:
		for i, e := range t {
			walk(e, append(slices.Clip(path), i), visit)
		}
	}
}

func rewriteAll(v interface{}, re *regexp.Regexp, site string) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, e := range t {
			out[k] = rewriteAll(e, re, site)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, e := range t {
			out[i] = rewriteAll(e, re, site)
		}
		return out
	case string:
		return re.ReplaceAllString(t, "${1}"+site+"${2}")
	}
	return v
}

func lookup(v interface{}, path []interface{}) interface{} {
	for _, seg := range path {
		switch t := v.(type) {
		case map[string]interface{}:
			k, _ := seg.(string)
			v = t[k]
		case []interface{}:
			i, _ := seg.(int)
			if i >= len(t) {
				return nil
			}
			v = t[i]
		default:
			return nil
		}
	}
	return v
}

func firstIndex(path []interface{}) int {
	for i, seg := range path {
		if _, ok := seg.(int); ok {
			return i
		}
	}
	return -1
}

func pathString(path []interface{}) string {
	var b strings.Builder
	for i, seg := range path {
		switch s := seg.(type) {
		case int:
			b.WriteString("[" + strconv.Itoa(s) + "]")
		default:
			if i > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, s)
		}
	}
	return b.String()
}

// Offender is one reason a release would reach outside the site.
type Offender struct {
	// What is an image reference or a value path.
	What string `json:"what"`
	// Where names the template object or says "values".
	Where   string `json:"where"`
	Problem string `json:"problem"`
}

func (o Offender) String() string { return fmt.Sprintf("%s (%s): %s", o.What, o.Where, o.Problem) }

// LintOptions configure AirgapLint.
type LintOptions struct {
	SourceRegistry string
	SitePath       string // HOST[:PORT][/PREFIX]
	ReleaseName    string
	Namespace      string
	// BundleImages, when set, are the bundle's source references: a
	// rendered image under SitePath that is not one of them is an
	// offender (an older release's image still in the registry).
	BundleImages []string
}

// AirgapLint renders the chart with vals exactly as the install will and
// returns every rendered image, plus offenders: images not under the site
// path and values still naming the source registry.
func AirgapLint(c *Chart, vals map[string]interface{}, opts LintOptions) ([]Image, []Offender, error) {
	if opts.SourceRegistry == "" {
		opts.SourceRegistry = DefaultSourceRegistry
	}
	d := DiscoverOptions{ReleaseName: opts.ReleaseName, Namespace: opts.Namespace}.withDefaults()
	found, err := renderedImages(c, d, copyValues(vals))
	if err != nil {
		return nil, nil, err
	}
	set := imageSet{}
	for _, f := range found {
		set.add(f.ref, f.source)
	}
	images := set.sorted()
	var offenders []Offender
	for _, img := range images {
		if !strings.HasPrefix(img.Ref, opts.SitePath+"/") {
			for _, src := range img.Sources {
				offenders = append(offenders, Offender{What: img.Ref, Where: strings.TrimPrefix(src, "template:"), Problem: "image is not under the site registry " + opts.SitePath})
			}
		}
	}
	merged, err := chartutil.CoalesceValues(c.Chart, copyValues(vals))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidValues, err)
	}
	if len(opts.BundleImages) > 0 {
		bt := newBundleTags(opts.BundleImages, opts.SourceRegistry)
		for _, img := range images {
			rel, under := strings.CutPrefix(img.Ref, opts.SitePath+"/")
			if !under {
				continue
			}
			repo, tag, dgst := splitRef(rel)
			if slices.Contains(bt[repo], tag) || (dgst != "" && slices.Contains(bt[repo], dgst)) {
				continue
			}
			where := pinnedBy(merged.AsMap(), opts.SitePath+"/"+repo, tag)
			problem := "not an image of this bundle"
			if len(where) > 0 {
				problem += ", pinned by values " + strings.Join(where, ", ")
			}
			for _, src := range img.Sources {
				offenders = append(offenders, Offender{What: img.Ref, Where: strings.TrimPrefix(src, "template:"), Problem: problem})
			}
		}
	}
	re := hostPattern(opts.SourceRegistry)
	walkValues(merged.AsMap(), nil, func(path []interface{}, s string) {
		if re.MatchString(s) {
			offenders = append(offenders, Offender{What: pathString(path), Where: "values", Problem: "still mentions " + opts.SourceRegistry})
		}
	})
	return images, offenders, nil
}

// pinnedBy names the value paths that write repo (HOST/PATH) with tag:
// strings holding it, or {registry?, repository, tag} maps.
func pinnedBy(vals map[string]interface{}, repo, tag string) []string {
	var out []string
	walk(vals, nil, func(path []interface{}, v interface{}) []string {
		switch t := v.(type) {
		case map[string]interface{}:
			if full, got, ok := imageMapRepo(t); ok && full == repo && got == tag {
				out = append(out, pathString(path))
			}
		case string:
			if strings.Contains(t, repo) && (tag == "" || strings.Contains(t, repo+":"+tag)) {
				out = append(out, pathString(path))
			}
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// copyValues deep-copies through YAML so rendering cannot alter the caller's map.
func copyValues(v map[string]interface{}) map[string]interface{} {
	b, err := sigsyaml.Marshal(v)
	if err != nil {
		return v
	}
	out := map[string]interface{}{}
	if err := sigsyaml.Unmarshal(b, &out); err != nil {
		return v
	}
	return out
}
