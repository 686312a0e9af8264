package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// fixture is an in-memory set of two images sharing a base layer.
type fixture struct {
	blobs    map[digest.Digest][]byte
	manifest *Manifest
	chart    []byte
}

func (f *fixture) add(mt string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	f.blobs[d] = data
	f.manifest.Blobs = append(f.manifest.Blobs, Blob{Digest: d, Size: int64(len(data)), MediaType: mt})
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{blobs: map[digest.Digest][]byte{}, manifest: &Manifest{
		Tool:           Tool{Name: "p7bundle", Version: "test"},
		SourceRegistry: "registry.pseven.io",
		Platforms:      []string{"linux/amd64"},
		Secretgen:      "registry.pseven.io/pseven-secretgen:1.0",
	}}
	f.chart = []byte("not really a tgz, but the bundle does not care")
	f.manifest.Chart = Chart{Name: "pseven", Version: "2023.09.25", AppVersion: "1.0", Path: "chart/pseven-2023.09.25.tgz",
		Digest: digest.FromBytes(f.chart), Size: int64(len(f.chart))}
	base := f.add(ocispec.MediaTypeImageLayerGzip, bytes.Repeat([]byte("shared base layer "), 5000))
	for _, name := range []string{"pseven-app", "pseven-secretgen"} {
		own := f.add(ocispec.MediaTypeImageLayerGzip, []byte("layer of "+name))
		cfg := f.add(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","name":"`+name+`"}`))
		man, _ := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{base, own}})
		md := f.add(ocispec.MediaTypeImageManifest, man)
		f.manifest.Images = append(f.manifest.Images, Image{
			Ref: "registry.pseven.io/" + name + ":1.0", Digest: md.Digest, MediaType: md.MediaType,
			Platforms: []string{"linux/amd64"}, Size: md.Size + cfg.Size + base.Size + own.Size,
			Blobs: sortedDigests(md, cfg, base, own),
		})
	}
	return f
}

// addImage adds an image of one layer (and its config and manifest).
func (f *fixture) addImage(t testing.TB, name string, mt string, layer []byte) {
	t.Helper()
	l := f.add(mt, layer)
	cfg := f.add(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","name":"`+name+`"}`))
	man, _ := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{l}})
	md := f.add(ocispec.MediaTypeImageManifest, man)
	f.manifest.Images = append(f.manifest.Images, Image{
		Ref: "registry.pseven.io/" + name + ":1.0", Digest: md.Digest, MediaType: md.MediaType,
		Platforms: []string{"linux/amd64"}, Size: md.Size + cfg.Size + l.Size, Blobs: sortedDigests(md, cfg, l),
	})
}

func sortedDigests(ds ...ocispec.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	slices.Sort(out)
	return out
}

func (f *fixture) open(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
	b, ok := f.blobs[d]
	if !ok {
		return nil, fmt.Errorf("no blob %s", d)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fixture) write(t testing.TB, path string, s Signer, concurrency int) *WriteResult {
	t.Helper()
	res, err := Write(context.Background(), path, WriteOptions{Manifest: f.manifest, Chart: f.chart, Blobs: f.open, Signer: s, Concurrency: concurrency})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func testKeys(t testing.TB, dir string) (Signer, Verifier) {
	t.Helper()
	key, pub, err := GenerateKeyPair(filepath.Join(dir, "cosign"), []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(context.Background(), key, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(context.Background(), pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestWriteVerifyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	f := newFixture(t)
	out := filepath.Join(dir, "b.tar.zst")
	res := f.write(t, out, s, 0)

	rep, err := Verify(context.Background(), out, VerifyOptions{Verifier: v})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.SignatureVerified || !rep.ContentVerified || rep.Digest != res.Digest {
		t.Fatalf("report = %+v, want verified with digest %s", rep, res.Digest)
	}
	// The shared base layer is stored once: 1 base + 2×(own, config, manifest).
	if rep.BlobsChecked != 7 || len(rep.Manifest.Blobs) != 7 {
		t.Errorf("blobs checked = %d, want 7", rep.BlobsChecked)
	}
	sumFile, _ := os.ReadFile(res.SHA256Path)
	if want := strings.TrimPrefix(res.Digest, "sha256:") + "  b.tar.zst\n"; string(sumFile) != want {
		t.Errorf(".sha256 = %q, want %q", sumFile, want)
	}
	// Entries come in the one documented order with fixed metadata.
	names := tarNames(t, out)
	if names[0] != ManifestEntry || names[1] != TOCSignatureEntry || names[2] != f.manifest.Chart.Path || names[3] != OCILayoutEntry || names[len(names)-1] != IndexEntry {
		t.Errorf("entry order = %v", names)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left: %v", leftovers)
	}
}

func tarNames(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, _ := zstd.NewReader(f)
	defer dec.Close()
	tr := tar.NewReader(dec)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Mode != 0o644 || h.ModTime.Unix() != 0 || h.Uname != "" {
			t.Errorf("%s: non-canonical header %+v", h.Name, h)
		}
		names = append(names, h.Name)
	}
}

func TestWriteIsReproducible(t *testing.T) {
	dir := t.TempDir()
	var sums []string
	// Encoder concurrency must not change a single byte.
	for i, conc := range []int{1, 4, 0} {
		f := newFixture(t)
		// Shuffle input order: Normalize must sort it back.
		if i == 1 {
			f.manifest.Images[0], f.manifest.Images[1] = f.manifest.Images[1], f.manifest.Images[0]
			f.manifest.Blobs[0], f.manifest.Blobs[3] = f.manifest.Blobs[3], f.manifest.Blobs[0]
		}
		res := f.write(t, filepath.Join(dir, fmt.Sprintf("b%d.tar.zst", i)), nil, conc)
		sums = append(sums, res.Digest)
	}
	if sums[0] != sums[1] || sums[1] != sums[2] {
		t.Fatalf("digests differ: %v", sums)
	}
}

func TestVerifyRejects(t *testing.T) {
	dir := t.TempDir()
	s, v := testKeys(t, dir)
	_, otherV := testKeys(t, t.TempDir())
	f := newFixture(t)
	good := filepath.Join(dir, "good.tar.zst")
	f.write(t, good, s, 0)
	data, _ := os.ReadFile(good)
	sig, _ := os.ReadFile(good + ".sig")

	variant := func(name string, mutate func([]byte) []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, mutate(append([]byte(nil), data...)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p+".sig", sig, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name     string
		path     string
		verifier Verifier
		want     error
	}{
		{"flipped byte middle", variant("flip.tar.zst", func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b }), v, ErrSignature},
		{"flipped last byte", variant("last.tar.zst", func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), v, ErrSignature},
		{"truncated", variant("trunc.tar.zst", func(b []byte) []byte { return b[:len(b)-100] }), v, ErrSignature},
		{"appended tail", variant("tail.tar.zst", func(b []byte) []byte { return append(b, "junk"...) }), v, ErrSignature},
		{"wrong public key", good, otherV, ErrSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Verify(context.Background(), tc.path, VerifyOptions{Verifier: tc.verifier})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if rep.SignatureVerified || rep.ContentVerified {
				t.Errorf("report claims success: %+v", rep)
			}
		})
	}
	// A truncated copy says so beside the signature failure, and an open
	// for push says it alone; neither blames an ASN.1 structure.
	trunc := filepath.Join(dir, "trunc.tar.zst")
	_, err := Verify(context.Background(), trunc, VerifyOptions{Verifier: v})
	if err == nil || !strings.Contains(err.Error(), "the file ends at") || strings.Contains(err.Error(), "ASN.1") {
		t.Errorf("Verify of a truncated copy: %v", err)
	}
	if _, err := OpenVerified(trunc, v); !errors.Is(err, ErrTruncated) {
		t.Errorf("OpenVerified of a truncated copy: %v", err)
	}
	// Without a key the content checks alone still catch a flipped byte.
	flipped := filepath.Join(dir, "flip.tar.zst")
	if _, err := Verify(context.Background(), flipped, VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unsigned content check of flipped bundle = %v, want ErrCorrupt", err)
	}
}

func TestLoadSignerWrongPassword(t *testing.T) {
	dir := t.TempDir()
	key, _, err := GenerateKeyPair(filepath.Join(dir, "cosign"), []byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = LoadSigner(context.Background(), key, []byte("wrong"))
	if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "wrong password") || !strings.Contains(err.Error(), key) {
		t.Fatalf("LoadSigner = %v, want ErrKey naming the key and the password", err)
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", st.Mode().Perm())
	}
	if _, _, err := GenerateKeyPair(filepath.Join(dir, "cosign"), []byte("x")); !errors.Is(err, ErrExists) {
		t.Errorf("second keygen = %v, want ErrExists", err)
	}
}

func TestWriteFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t)
	delete(f.blobs, f.manifest.Blobs[2].Digest)
	out := filepath.Join(dir, "b.tar.zst")
	_, err := Write(context.Background(), out, WriteOptions{Manifest: f.manifest, Chart: f.chart, Blobs: f.open})
	if err == nil {
		t.Fatal("Write succeeded with a missing blob")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("files left after failed write: %v", entries)
	}
	// A blob whose bytes do not match its digest is refused too.
	f = newFixture(t)
	f.blobs[f.manifest.Blobs[0].Digest] = bytes.Repeat([]byte("X"), int(f.manifest.Blobs[0].Size))
	if _, err := Write(context.Background(), out, WriteOptions{Manifest: f.manifest, Chart: f.chart, Blobs: f.open}); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("Write with corrupt source = %v, want digest error", err)
	}
}

// A companion that cannot be written takes the bundle and the companions
// already written with it: no bundle without its signature, no signature
// beside a bundle it does not sign.
func TestCompanionFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	signer, _ := testKeys(t, t.TempDir())
	f := newFixture(t)
	out := filepath.Join(dir, "b.tar.zst")
	if err := os.Mkdir(out+".sigstore.json", 0o755); err != nil { // written after .sha256 and .sig
		t.Fatal(err)
	}
	if _, err := Write(context.Background(), out, WriteOptions{Manifest: f.manifest, Chart: f.chart, Blobs: f.open, Signer: signer}); err == nil {
		t.Fatal("Write succeeded with a directory where the sigstore bundle goes")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "b.tar.zst.sigstore.json" {
		t.Errorf("files left after a failed companion write: %v", entries)
	}
}

// craft writes an arbitrary tar+zstd archive for hostile-input tests.
func craft(t testing.TB, path string, entries []tar.Header, bodies [][]byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, h := range entries {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if bodies[i] != nil {
			tw.Write(bodies[i])
		}
	}
	tw.Close()
	if err := os.WriteFile(path, frameTar(buf.Bytes()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReaderRejectsHostileArchives(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t)
	f.manifest.Normalize()
	mb, _ := f.manifest.Encode()
	reg := func(name string, body []byte) (tar.Header, []byte) {
		return tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(body)), Mode: 0o644}, body
	}
	mh, mbody := reg(ManifestEntry, mb)
	sh, sbody := reg(TOCSignatureEntry, nil)
	ch, cbody := reg(f.manifest.Chart.Path, f.chart)
	cases := []struct {
		name    string
		headers []tar.Header
		bodies  [][]byte
		want    string
	}{
		{"path traversal first", []tar.Header{{Typeflag: tar.TypeReg, Name: "../evil", Size: 1}}, [][]byte{{'x'}}, `unexpected entry "../evil"`},
		{"absolute path", []tar.Header{mh, {Typeflag: tar.TypeReg, Name: "/etc/passwd", Size: 1}}, [][]byte{mbody, {'x'}}, `unexpected entry "/etc/passwd"`},
		{"duplicate manifest", []tar.Header{mh, mh}, [][]byte{mbody, mbody}, `unexpected entry "p7bundle.json"`},
		{"huge manifest claim", []tar.Header{{Typeflag: tar.TypeReg, Name: ManifestEntry, Size: 1 << 40}}, [][]byte{nil}, "claims"},
		{"chart size lie", []tar.Header{mh, sh, {Typeflag: tar.TypeReg, Name: ch.Name, Size: ch.Size + 1, Mode: 0o644}}, [][]byte{mbody, sbody, append(cbody, 'x')}, "the manifest implies"},
		{"missing blobs", []tar.Header{mh, sh, ch}, [][]byte{mbody, sbody, cbody}, "the manifest implies"},
		{"garbage manifest", []tar.Header{{Typeflag: tar.TypeReg, Name: ManifestEntry, Size: 3}}, [][]byte{[]byte("{{{")}, "p7bundle.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			craft(t, p, tc.headers, tc.bodies)
			_, err := Verify(context.Background(), p, VerifyOptions{})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify = %v, want ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
	// Headers that keep every size (so the layout holds) but turn an entry
	// into a link, a device, or something owned by a user.
	good := filepath.Join(dir, "good.tar.zst")
	f.write(t, good, nil, 0)
	raw := decompress(t, mustRead(t, good))
	var targets []region
	for _, r := range tarRegions(t, raw) {
		if r.name == "header "+f.manifest.Chart.Path || (strings.HasPrefix(r.name, "header "+BlobDir) && len(targets) < 2) {
			targets = append(targets, r)
		}
	}
	patches := []struct {
		name  string
		off   int
		value string
	}{{"symlink", 156, "2"}, {"hardlink", 156, "1"}, {"char device", 156, "3"}, {"uid 1000", 108, "0001750\x00"}, {"mode 4755", 100, "0004755\x00"}}
	for _, r := range targets {
		for _, pt := range patches {
			b := append([]byte(nil), raw...)
			patchHeader(b[r.from:r.to], pt.off, pt.value)
			p := filepath.Join(dir, "patched.tar.zst")
			os.WriteFile(p, reframe(t, mustRead(t, good), b), 0o644)
			_, err := Verify(context.Background(), p, VerifyOptions{})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not the canonical one") {
				t.Errorf("%s made %s: Verify = %v", r.name, pt.name, err)
			}
		}
	}
}

// patchHeader writes value into a tar header block and fixes its checksum,
// so only the field differs.
func patchHeader(block []byte, off int, value string) {
	copy(block[off:], value)
	copy(block[148:156], "        ")
	sum := 0
	for _, c := range block[:512] {
		sum += int(c)
	}
	copy(block[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func decompress(t testing.TB, data []byte) []byte {
	t.Helper()
	dec, _ := zstd.NewReader(bytes.NewReader(data))
	defer dec.Close()
	raw, err := io.ReadAll(dec)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestZstdBomb: a manifest entry claiming 1 GiB (zeros compress to a few
// KB) is refused from its header, and a frame that inflates past the size
// its seek table gives is refused without inflating it.
func TestZstdBomb(t *testing.T) {
	dir := t.TempDir()
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestEntry, Size: 1 << 30, Mode: 0o644})
	zero := make([]byte, FrameSize)
	chunks := [][]byte{append(hdr.Bytes(), zero[:FrameSize-hdr.Len()]...)}
	for i := 1; i < 1<<8; i++ {
		chunks = append(chunks, zero)
	}
	bomb := frameChunks(chunks)
	// The second: one frame of 256 MiB of zeros that the table calls FrameSize.
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	inflating := enc.EncodeAll(make([]byte, 256<<20), nil)
	enc.Close()
	inflating = appendSeekTable(inflating, []frame{{cSize: int64(len(inflating)), dSize: FrameSize}})
	for name, data := range map[string][]byte{"claims": bomb, "frame 0": inflating} {
		p := filepath.Join(dir, "bomb.tar.zst")
		os.WriteFile(p, data, 0o644)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := Verify(context.Background(), p, VerifyOptions{})
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) {
			t.Errorf("Verify of a %d-byte bomb = %v, want %q", len(data), err, name)
		}
		if grew := int64(after.TotalAlloc) - int64(before.TotalAlloc); grew > 256<<20 {
			t.Errorf("verifying the bomb allocated %d MiB", grew>>20)
		}
	}
}

func TestReaderChecksManifestReferences(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t)
	// Drop a layer from the blob list: the manifest naming it must be refused.
	var layer digest.Digest
	for _, b := range f.manifest.Blobs {
		if b.MediaType == ocispec.MediaTypeImageLayerGzip && b.Size < 100 {
			layer = b.Digest
		}
	}
	var kept []Blob
	for _, b := range f.manifest.Blobs {
		if b.Digest != layer {
			kept = append(kept, b)
		}
	}
	f.manifest.Blobs = kept
	// Keep the image lists consistent so only the manifest's own reference is wrong.
	for i, img := range f.manifest.Images {
		var ds []digest.Digest
		for _, d := range img.Blobs {
			if d != layer {
				ds = append(ds, d)
			} else {
				f.manifest.Images[i].Size -= int64(len(f.blobs[layer]))
			}
		}
		f.manifest.Images[i].Blobs = ds
	}
	out := filepath.Join(dir, "b.tar.zst")
	f.write(t, out, nil, 0)
	_, err := Verify(context.Background(), out, VerifyOptions{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "references "+layer.String()) {
		t.Fatalf("Verify = %v, want a missing-reference error naming %s", err, layer)
	}
}

func TestSignatureIsCosignFormat(t *testing.T) {
	// The .sig verifies against sha256 of the file: what cosign verify-blob checks.
	dir := t.TempDir()
	s, _ := testKeys(t, dir)
	f := newFixture(t)
	out := filepath.Join(dir, "b.tar.zst")
	f.write(t, out, s, 0)
	// Checked the way cosign verify-blob --key does, without our verifier:
	// base64 ECDSA signature over the file, key from the PEM file.
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(mustRead(t, filepath.Join(dir, "cosign.pub")))
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := base64.StdEncoding.DecodeString(string(mustRead(t, out+".sig")))
	if err != nil {
		t.Fatalf(".sig is not base64: %v", err)
	}
	if err := sv.VerifySignature(bytes.NewReader(sig), bytes.NewReader(mustRead(t, out))); err != nil {
		t.Fatal(err)
	}
	if _, err := hex.DecodeString(strings.Fields(string(mustRead(t, out+".sha256")))[0]); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReaderChecksImageBlobLists(t *testing.T) {
	f := newFixture(t)
	// Claim the other image's config for the first image: its manifests do not name it.
	var foreign Blob
	for _, b := range f.manifest.Blobs {
		if b.MediaType == ocispec.MediaTypeImageConfig && !slices.Contains(f.manifest.Images[0].Blobs, b.Digest) {
			foreign = b
		}
	}
	img := &f.manifest.Images[0]
	img.Blobs = append(img.Blobs, foreign.Digest)
	slices.Sort(img.Blobs)
	img.Size += foreign.Size
	out := filepath.Join(t.TempDir(), "b.tar.zst")
	f.write(t, out, nil, 0)
	_, err := Verify(context.Background(), out, VerifyOptions{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), img.Ref) {
		t.Fatalf("Verify = %v, want an error naming %s", err, img.Ref)
	}
}

func TestFreshBlobsKeepTheSizeCheck(t *testing.T) {
	f := newFixture(t)
	d := f.manifest.Blobs[0].Digest
	f.blobs[d] = f.blobs[d][:len(f.blobs[d])-1]
	out := filepath.Join(t.TempDir(), "b.tar.zst")
	_, err := Write(context.Background(), out, WriteOptions{Manifest: f.manifest, Chart: f.chart, Blobs: f.open,
		Fresh: func(digest.Digest) bool { return true }})
	if err == nil || !strings.Contains(err.Error(), "expected") {
		t.Fatalf("Write with a short fresh blob = %v, want a size error", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("output left after a failed write")
	}
}

// GenerateKeyPair writes what cosign writes; each side loads the other's
// key (the stock CLI checks the same in cmd/p7bundle's e2e test).
func TestKeysAreCosignKeys(t *testing.T) {
	dir := t.TempDir()
	password := []byte("pw")
	keyPath, pubPath, err := GenerateKeyPair(filepath.Join(dir, "ours"), password)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", keyPath, fi.Mode().Perm())
	}
	sv, err := cosign.LoadPrivateKey(mustRead(t, keyPath), password, nil)
	if err != nil {
		t.Fatalf("cosign cannot load our key: %v", err)
	}
	sum := sha256.Sum256([]byte("payload"))
	sig, err := sv.SignMessage(bytes.NewReader(sum[:]), options.WithDigest(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(context.Background(), pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyDigest(sum[:], base64.StdEncoding.EncodeToString(sig)); err != nil {
		t.Fatalf("cosign's signature with our key does not verify against our .pub: %v", err)
	}
	if _, err := cosign.LoadPrivateKey(mustRead(t, keyPath), []byte("wrong"), nil); err == nil {
		t.Fatal("cosign loaded our key with the wrong password")
	}

	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return password, nil })
	if err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(dir, "theirs.key")
	os.WriteFile(theirs, keys.PrivateBytes, 0o600)
	s, err := LoadSigner(context.Background(), theirs, password)
	if err != nil {
		t.Fatalf("cosign's key does not load: %v", err)
	}
	b64, err := s.SignDigest(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := cryptoutils.UnmarshalPEMToPublicKey(keys.PublicBytes)
	cv, _ := signature.LoadVerifier(pub, crypto.SHA256)
	raw, _ := base64.StdEncoding.DecodeString(b64)
	if err := cv.VerifySignature(bytes.NewReader(raw), nil, options.WithDigest(sum[:])); err != nil {
		t.Fatalf("our signature with cosign's key does not verify: %v", err)
	}
	if _, err := LoadSigner(context.Background(), theirs, []byte("wrong")); !errors.Is(err, ErrKey) {
		t.Fatalf("LoadSigner with the wrong password = %v, want ErrKey", err)
	}
}

// Opening a bundle reads a few KiB of head frames; it used to take a
// pooled 4 MiB buffer (and its page faults) for each, which was most of a
// re-install's time in the process.
func TestOpenAllocatesForTheHeadOnly(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(t.TempDir(), "b.tar.zst")
	f.write(t, out, nil, 0)
	a, err := Open(out) // warm: the decoder's own tables
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	a, err = Open(out)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	a.Close()
	if n := after.TotalAlloc - before.TotalAlloc; n > 2<<20 {
		t.Fatalf("Open allocated %d bytes, want under 2 MiB", n)
	}
}
