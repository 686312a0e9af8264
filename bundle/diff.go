package bundle

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/p7bundle/p7bundle/internal/imageref"
)

// LoadManifest reads the manifest of a bundle, or a manifest exported with
// `p7bundle inspect B --manifest` (so a build host need not keep old
// multi-GB bundles). Nothing else is verified.
func LoadManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	head, _ := bufio.NewReader(f).Peek(1)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if !bytes.Equal(head, []byte("{")) {
		return ReadManifest(path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

// Diff is what changes from one bundle to the next, from their manifests.
type Diff struct {
	Old ChartChange `json:"old"`
	New ChartChange `json:"new"`
	// Images are matched by repository: a new tag is not a new image.
	Added     []ImageChange `json:"added"`
	Removed   []ImageChange `json:"removed"`
	Changed   []ImageChange `json:"changed"`
	Unchanged []ImageChange `json:"unchanged"`
	// NewBlobs are the new bundle's blobs the old one does not list: what
	// a differential bundle against the old one carries.
	NewBlobs    int   `json:"newBlobs"`
	NewBytes    int64 `json:"newBytes"`
	SharedBlobs int   `json:"sharedBlobs"`
	SharedBytes int64 `json:"sharedBytes"`
	// FullBytes is what a full bundle carries (each blob once).
	FullBytes int64 `json:"fullBytes"`
}

// ChartChange names one side's chart.
type ChartChange struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

// ImageChange is one image across the two bundles; From is empty for an
// added image, To for a removed one.
type ImageChange struct {
	Repository string        `json:"repository"`
	FromRef    string        `json:"fromRef,omitempty"`
	ToRef      string        `json:"toRef,omitempty"`
	From       digest.Digest `json:"fromDigest,omitempty"`
	To         digest.Digest `json:"toDigest,omitempty"`
}

// DiffManifests compares two bundle manifests.
func DiffManifests(old, new *Manifest) *Diff {
	d := &Diff{
		Old: ChartChange{old.Chart.Name, old.Chart.Version, old.Chart.AppVersion},
		New: ChartChange{new.Chart.Name, new.Chart.Version, new.Chart.AppVersion},
	}
	// Signatures share their image's repository: pairing them by tag
	// would pair an image with a signature.
	oldImgs, newImgs := byRepository(old.ContainerImages()), byRepository(new.ContainerImages())
	repos := map[string]bool{}
	for r := range oldImgs {
		repos[r] = true
	}
	for r := range newImgs {
		repos[r] = true
	}
	for _, r := range sortedKeys(repos) {
		o, n := oldImgs[r], newImgs[r]
		// A repository carried under several tags pairs tag by tag.
		for i := 0; i < len(o) || i < len(n); i++ {
			c := ImageChange{Repository: r}
			if i < len(o) {
				c.FromRef, c.From = o[i].Ref, o[i].Digest
			}
			if i < len(n) {
				c.ToRef, c.To = n[i].Ref, n[i].Digest
			}
			switch {
			case c.From == "":
				d.Added = append(d.Added, c)
			case c.To == "":
				d.Removed = append(d.Removed, c)
			case c.From != c.To:
				d.Changed = append(d.Changed, c)
			default:
				d.Unchanged = append(d.Unchanged, c)
			}
		}
	}
	had := make(map[digest.Digest]bool, len(old.Blobs))
	for _, b := range old.Blobs {
		had[b.Digest] = true
	}
	for _, b := range new.Blobs {
		d.FullBytes += b.Size
		if had[b.Digest] {
			d.SharedBlobs++
			d.SharedBytes += b.Size
		} else {
			d.NewBlobs++
			d.NewBytes += b.Size
		}
	}
	return d
}

func byRepository(images []Image) map[string][]Image {
	out := map[string][]Image{}
	for _, img := range images {
		name, _, _ := imageref.Split(img.Ref)
		out[name] = append(out[name], img)
	}
	for _, imgs := range out {
		sort.Slice(imgs, func(i, j int) bool { return imgs[i].Ref < imgs[j].Ref })
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// BaseFor makes m differential against base (a bundle or an exported
// manifest at path): every blob base lists, omitted or not, is at a site
// that installed it, so m omits it. A base for other platforms or another
// source registry would omit blobs the site does not have: refused.
func BaseFor(m, base *Manifest, path string) error {
	if base.SourceRegistry != m.SourceRegistry {
		return fmt.Errorf("%w: %s was built from %s, this bundle from %s", ErrBase, path, base.SourceRegistry, m.SourceRegistry)
	}
	if a, b := strings.Join(sortedCopy(base.Platforms), ","), strings.Join(sortedCopy(m.Platforms), ","); a != b {
		return fmt.Errorf("%w: %s holds platforms %s, this bundle %s", ErrBase, path, a, b)
	}
	md, err := base.Digest()
	if err != nil {
		return err
	}
	had := make(map[digest.Digest]bool, len(base.Blobs))
	for _, b := range base.Blobs {
		had[b.Digest] = true
	}
	for i := range m.Blobs {
		m.Blobs[i].Omitted = had[m.Blobs[i].Digest]
	}
	m.Base = &BaseBundle{Name: BaseName(base), ManifestDigest: md}
	if !strings.HasSuffix(path, ".json") {
		if m.Base.Digest, err = fileDigest(path); err != nil {
			return err
		}
	}
	return nil
}

// BaseName is how a base is named to the admin: its chart and version.
func BaseName(m *Manifest) string { return m.Chart.Name + "-" + m.Chart.Version + ".tar.zst" }

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// fileDigest reads B.sha256 beside a bundle when build wrote one, else
// hashes B (all its parts, for a split bundle).
func fileDigest(path string) (string, error) {
	bf, err := resolveFiles(path)
	if err != nil {
		return "", err
	}
	if b, err := os.ReadFile(bf.path + ".sha256"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if d := digest.NewDigestFromEncoded(digest.SHA256, f[0]); d.Validate() == nil {
				return d.String(), nil
			}
		}
	}
	mf, err := bf.open()
	if err != nil {
		return "", err
	}
	defer mf.Close()
	d, err := digest.SHA256.FromReader(io.NewSectionReader(mf, 0, mf.size))
	if err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return d.String(), nil
}
