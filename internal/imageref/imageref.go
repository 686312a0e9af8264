// Package imageref is the one image reference parser of p7bundle:
// "host[:port]/path[:tag][@digest]", with the grammar of
// github.com/distribution/reference (a port is never a tag, "repo:tag@digest"
// keeps both). Names are kept as written: no docker.io normalisation.
package imageref

import (
	"fmt"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Ref is a parsed reference.
type Ref struct {
	// Name is host[:port]/path, as written.
	Name   string
	Tag    string        // "" when absent
	Digest digest.Digest // "" when absent
}

// Parse parses ref; it must at least have a valid name.
func Parse(ref string) (Ref, error) {
	r, err := reference.Parse(ref)
	if err != nil {
		return Ref{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	var out Ref
	named, ok := r.(reference.Named)
	if !ok {
		return Ref{}, fmt.Errorf("image reference %q: no repository name", ref)
	}
	out.Name = named.Name()
	if t, ok := r.(reference.Tagged); ok {
		out.Tag = t.Tag()
	}
	if d, ok := r.(reference.Digested); ok {
		out.Digest = d.Digest()
	}
	return out, nil
}

// Split is Parse for references already validated (a bundle manifest's,
// a rendered chart's): an unparsable one comes back whole as the name.
func Split(ref string) (name, tag string, dgst digest.Digest) {
	r, err := Parse(ref)
	if err != nil {
		return ref, "", ""
	}
	return r.Name, r.Tag, r.Digest
}

// String renders name[:tag][@digest].
func (r Ref) String() string {
	s := r.Name
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}
