// Package policy reads a site policy file: what install, push and doctor
// require at a site, whatever their flags say. Flags may add to it
// (another approver) but never relax it.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"

	"sigs.k8s.io/yaml"
)

// ErrPolicy: the policy file is unsafe or unreadable, or a flag asks for
// what it forbids.
var ErrPolicy = errors.New("site policy")

// Policy is the file's content (docs/SECURITY.md#site-policy).
type Policy struct {
	// Site is this site's name, for approvals that name sites.
	Site string `json:"site,omitempty"`
	// SigningKeys: the bundle must be signed by one of these (--key).
	SigningKeys []string `json:"signingKeys,omitempty"`
	// ApprovalKeys must each have approved the bundle (--require-approval).
	ApprovalKeys []string `json:"approvalKeys,omitempty"`
	// AllowedRegistries limits --registry (HOST[:PORT] as given).
	AllowedRegistries []string `json:"allowedRegistries,omitempty"`
	// AllowInsecureSkipVerify and AllowSkipDoctor permit those flags.
	AllowInsecureSkipVerify bool `json:"allowInsecureSkipVerify,omitempty"`
	AllowSkipDoctor         bool `json:"allowSkipDoctor,omitempty"`

	// Path is where it was read from.
	Path string `json:"-"`
}

// Load reads the policy at path. Anyone who can write it decides what the
// site accepts, so it is refused unless only its owner may write it.
func Load(path string) (*Policy, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrPolicy, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s: not a regular file", ErrPolicy, path)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("%w %s: group or others may write it (mode %04o): run chmod go-w %s", ErrPolicy, path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrPolicy, path, err)
	}
	p := &Policy{Path: path}
	if err := yaml.UnmarshalStrict(bytes.TrimSpace(data), p); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrPolicy, path, err)
	}
	return p, nil
}

// Flags are the settings the policy governs, as the command line gave them.
type Flags struct {
	Key                string
	RequireApprovals   []string
	Site               string
	Registry           string
	InsecureSkipVerify bool
	SkipDoctor         bool
}

// Apply returns f with the policy's requirements added, or an error naming
// the flag the policy forbids.
func (p *Policy) Apply(f Flags) (Flags, error) {
	deny := func(format string, args ...any) (Flags, error) {
		return f, fmt.Errorf("%w %s: %s", ErrPolicy, p.Path, fmt.Sprintf(format, args...))
	}
	if f.InsecureSkipVerify && !p.AllowInsecureSkipVerify {
		return deny("--insecure-skip-verify is not allowed at this site")
	}
	if f.SkipDoctor && !p.AllowSkipDoctor {
		return deny("--skip-doctor is not allowed at this site")
	}
	if len(p.SigningKeys) > 0 && !f.InsecureSkipVerify {
		switch {
		case f.Key == "" && len(p.SigningKeys) == 1:
			f.Key = p.SigningKeys[0]
		case f.Key == "":
			return deny("pass --key, one of %v", p.SigningKeys)
		case !slices.Contains(p.SigningKeys, f.Key):
			return deny("--key %s is not one of its signing keys %v", f.Key, p.SigningKeys)
		}
	}
	if len(p.AllowedRegistries) > 0 && f.Registry != "" && !slices.Contains(p.AllowedRegistries, f.Registry) {
		return deny("--registry %s is not one of its registries %v", f.Registry, p.AllowedRegistries)
	}
	if p.Site != "" {
		if f.Site != "" && f.Site != p.Site {
			return deny("--site %s, but this site is %s", f.Site, p.Site)
		}
		f.Site = p.Site
	}
	for _, k := range p.ApprovalKeys {
		if !slices.Contains(f.RequireApprovals, k) {
			f.RequireApprovals = append(f.RequireApprovals, k)
		}
	}
	if len(f.RequireApprovals) > 0 && f.InsecureSkipVerify {
		return deny("approvals are required, and --insecure-skip-verify would skip the signature they bind to")
	}
	return f, nil
}
