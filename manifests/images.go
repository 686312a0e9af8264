package manifests

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Defaults of DiscoverOptions.
const (
	DefaultSourceRegistry = "registry.pseven.io"
	DefaultReleaseName    = "pseven-rl"
	DefaultNamespace      = "pseven-ns"
)

// Source labels of images that do not come from the chart.
const (
	SourceSecretgen = "secretgen"
	SourceExtra     = "--image"
)

var (
	// ErrInvalidReference means an image reference does not parse.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrUnmatchedExclude means an --exclude reference matched no image.
	ErrUnmatchedExclude = errors.New("excluded image not found")
)

// DiscoverOptions tunes DiscoverImages. The zero value is usable.
type DiscoverOptions struct {
	// SourceRegistry is the registry host (optionally with a path prefix)
	// whose references are collected from values. Default DefaultSourceRegistry.
	SourceRegistry string
	// Extra references are added with the source "--image". Without a tag
	// they get the chart appVersion when on SourceRegistry, "latest" otherwise.
	Extra []string
	// Exclude references are removed from the result, compared after
	// normalisation like Extra. An Exclude that matches no image is an error
	// (ErrUnmatchedExclude).
	Exclude []string
	// ReleaseName and Namespace are used for client-side rendering.
	// Defaults DefaultReleaseName and DefaultNamespace.
	ReleaseName string
	Namespace   string
}

func (o DiscoverOptions) withDefaults() DiscoverOptions {
	o.SourceRegistry = strings.TrimRight(strings.TrimSpace(o.SourceRegistry), "/")
	if o.SourceRegistry == "" {
		o.SourceRegistry = DefaultSourceRegistry
	}
	if o.ReleaseName == "" {
		o.ReleaseName = DefaultReleaseName
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	return o
}

// Image is one image the chart needs.
type Image struct {
	// Ref is the normalised reference (see NormalizeRef), e.g.
	// "registry.pseven.io/pseven-app:6.47.4712".
	Ref string `json:"ref"`
	// Sources says where Ref was found, sorted and deduplicated:
	//   "values:<path>"                          chart values
	//   "values:<path> (subchart <name>)"        a subchart's own values; <path> as seen from the parent
	//   "template:<file> <Kind>/<name> <field> <container>"
	//                                            rendered templates; <field> is container, initContainer or ephemeralContainer
	//   "secretgen", "--image"                   added by p7bundle / the user
	Sources []string `json:"sources"`
}

// SecretgenRef is the reference of the pseven-secretgen image, which
// generates the installation secrets and is not referenced by the chart.
func SecretgenRef(sourceRegistry, appVersion string) string {
	return strings.TrimRight(sourceRegistry, "/") + "/pseven-secretgen:" + appVersion
}

// DiscoverImages returns every image the chart needs, sorted by Ref: the
// images of the rendered templates, the source-registry references in the
// values of the chart and its subcharts, opts.Extra and the secretgen image,
// minus opts.Exclude.
//
// A reference found in values without a tag or digest gets the chart
// appVersion as its tag (the chart appends it); one rendered without a tag
// gets "latest", as Kubernetes would pull. ErrNoImages is returned when
// templates, values and Extra yield nothing, or everything is excluded.
func DiscoverImages(c *Chart, opts DiscoverOptions) ([]Image, error) {
	if c == nil || c.Chart == nil || c.Chart.Metadata == nil {
		return nil, fmt.Errorf("%w: no chart loaded", ErrInvalidChart)
	}
	opts = opts.withDefaults()
	label := c.label()
	appVersion := c.AppVersion
	if appVersion == "" {
		appVersion = c.Chart.Metadata.AppVersion
	}
	if appVersion == "" {
		return nil, fmt.Errorf("%s: %w", label, ErrNoAppVersion)
	}

	set := imageSet{}
	rendered, err := renderedImages(c, opts, nil)
	if err != nil {
		return nil, err
	}
	for _, f := range rendered {
		ref, err := NormalizeRef(f.ref, "latest")
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", label, f.source, err)
		}
		set.add(ref, f.source)
	}

	found, err := valueImages(c.Chart, opts.SourceRegistry)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	for _, f := range found {
		ref, err := NormalizeRef(f.ref, appVersion)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", label, f.source, err)
		}
		set.add(ref, f.source)
	}

	for _, e := range opts.Extra {
		ref, err := normalizeUserRef(e, opts.SourceRegistry, appVersion)
		if err != nil {
			return nil, fmt.Errorf("--image %q: %w", e, err)
		}
		set.add(ref, SourceExtra)
	}

	if len(set) == 0 {
		return nil, fmt.Errorf("%s: %w: no container in the rendered templates and no reference to %s in values", label, ErrNoImages, opts.SourceRegistry)
	}
	set.add(SecretgenRef(opts.SourceRegistry, appVersion), SourceSecretgen)

	for _, e := range opts.Exclude {
		ref, err := normalizeUserRef(e, opts.SourceRegistry, appVersion)
		if err != nil {
			return nil, fmt.Errorf("--exclude %q: %w", e, err)
		}
		if _, ok := set[ref]; !ok {
			// A typo here would silently leave the image in the bundle.
			return nil, fmt.Errorf("--exclude %q: %w: %s is not among the images of %s", e, ErrUnmatchedExclude, ref, label)
		}
		delete(set, ref)
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("%s: %w: every image is excluded", label, ErrNoImages)
	}
	return set.sorted(), nil
}

// label names the chart in errors.
func (c *Chart) label() string {
	switch {
	case c.Path != "":
		return fmt.Sprintf("chart %q", c.Path)
	case c.FileName != "":
		return fmt.Sprintf("chart %q", c.FileName)
	default:
		return fmt.Sprintf("chart %q", c.Chart.Metadata.Name)
	}
}

// foundRef is a raw reference and where it was found.
type foundRef struct {
	ref    string
	source string
}

type imageSet map[string]map[string]struct{}

func (s imageSet) add(ref, source string) {
	if s[ref] == nil {
		s[ref] = map[string]struct{}{}
	}
	s[ref][source] = struct{}{}
}

func (s imageSet) sorted() []Image {
	out := make([]Image, 0, len(s))
	for ref, srcs := range s {
		img := Image{Ref: ref, Sources: make([]string, 0, len(srcs))}
		for src := range srcs {
			img.Sources = append(img.Sources, src)
		}
		sort.Strings(img.Sources)
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

// normalizeUserRef normalises --image / --exclude: a tagless reference on the
// source registry gets appVersion, like a tagless reference in values.
func normalizeUserRef(ref, sourceRegistry, appVersion string) (string, error) {
	def := "latest"
	if strings.HasPrefix(strings.TrimSpace(ref), sourceRegistry+"/") {
		def = appVersion
	}
	return NormalizeRef(ref, def)
}

// NormalizeRef validates an image reference and returns its canonical form:
// registry host kept as written, except Docker Hub, which becomes
// "docker.io/<namespace>/<repo>" ("busybox" → "docker.io/library/busybox");
// tag and digest kept ("repo:tag@sha256:..." keeps both); defaultTag added
// when there is neither ("latest" if defaultTag is empty). Errors wrap
// ErrInvalidReference.
func NormalizeRef(ref, defaultTag string) (string, error) {
	s := strings.TrimSpace(ref)
	if s == "" {
		return "", fmt.Errorf("%w: empty reference", ErrInvalidReference)
	}
	if strings.Contains(s, "://") {
		return "", fmt.Errorf("%w: %q: an image reference has no URL scheme", ErrInvalidReference, ref)
	}
	base, digest := s, ""
	if i := strings.IndexByte(s, '@'); i >= 0 {
		base, digest = s[:i], s[i+1:]
	}
	tag := ""
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		base, tag = base[:i], base[i+1:]
		if tag == "" {
			return "", fmt.Errorf("%w: %q: empty tag", ErrInvalidReference, ref)
		}
	}
	repo, err := name.NewRepository(base, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidReference, ref, err)
	}
	host := repo.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	out := host + "/" + repo.RepositoryStr()
	if tag == "" && digest == "" {
		tag = defaultTag
		if tag == "" {
			tag = "latest"
		}
	}
	if tag != "" {
		if _, err := name.NewTag(out+":"+tag, name.WeakValidation); err != nil {
			return "", fmt.Errorf("%w: %q: %w", ErrInvalidReference, ref, err)
		}
		out += ":" + tag
	}
	if digest != "" {
		if _, err := name.NewDigest(host+"/"+repo.RepositoryStr()+"@"+digest, name.WeakValidation); err != nil {
			return "", fmt.Errorf("%w: %q: %w", ErrInvalidReference, ref, err)
		}
		out += "@" + digest
	}
	return out, nil
}
