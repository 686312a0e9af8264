package bundle

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestDiffManifestsMatchesByRepository(t *testing.T) {
	blob := func(d digest.Digest, size int64) Blob { return Blob{Digest: d, Size: size} }
	old := &Manifest{Chart: Chart{Name: "pseven", Version: "1", AppVersion: "a"},
		Images: []Image{
			{Ref: "r.io/app:1", Digest: "sha256:a1"},
			{Ref: "r.io/gone:1", Digest: "sha256:g1"},
			{Ref: "r.io/same:1", Digest: "sha256:s1"},
			{Ref: "r.io/two:x", Digest: "sha256:x1"},
		},
		Blobs: []Blob{blob("sha256:a1", 10), blob("sha256:g1", 20), blob("sha256:s1", 30), blob("sha256:x1", 40)},
	}
	new := &Manifest{Chart: Chart{Name: "pseven", Version: "2", AppVersion: "b"},
		Images: []Image{
			{Ref: "r.io/app:2", Digest: "sha256:a2"},
			{Ref: "r.io/new@sha256:n1", Digest: "sha256:n1"},
			{Ref: "r.io/same:2", Digest: "sha256:s1"},
			{Ref: "r.io/two:x", Digest: "sha256:x1"},
			{Ref: "r.io/two:y", Digest: "sha256:y1"},
			// The vendor's signature of app:2, in app's repository: not an image to pair.
			{Ref: "r.io/app:sha256-a2.sig", Digest: "sha256:sig", Signs: "sha256:a2"},
		},
		Blobs: []Blob{blob("sha256:a2", 11), blob("sha256:n1", 5), blob("sha256:s1", 30), blob("sha256:x1", 40), blob("sha256:y1", 7)},
	}
	d := DiffManifests(old, new)
	check := func(what string, got []ImageChange, want ...string) {
		t.Helper()
		var refs []string
		for _, c := range got {
			refs = append(refs, c.FromRef+">"+c.ToRef)
		}
		if len(refs) != len(want) {
			t.Errorf("%s = %q, want %q", what, refs, want)
			return
		}
		for i := range want {
			if refs[i] != want[i] {
				t.Errorf("%s = %q, want %q", what, refs, want)
			}
		}
	}
	check("changed", d.Changed, "r.io/app:1>r.io/app:2")
	check("added", d.Added, ">r.io/new@sha256:n1", ">r.io/two:y")
	check("removed", d.Removed, "r.io/gone:1>")
	check("unchanged", d.Unchanged, "r.io/same:1>r.io/same:2", "r.io/two:x>r.io/two:x")
	if d.NewBlobs != 3 || d.NewBytes != 23 || d.SharedBlobs != 2 || d.SharedBytes != 70 || d.FullBytes != 93 {
		t.Errorf("blobs %+v", d)
	}
}

func TestLoadManifestRefusesGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.json")
	os.WriteFile(p, []byte(`{"mediaType": "something/else"}`), 0o644)
	if _, err := LoadManifest(p); err == nil {
		t.Error("a foreign JSON document was taken for a manifest")
	}
	if _, err := LoadManifest(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing file")
	}
}
