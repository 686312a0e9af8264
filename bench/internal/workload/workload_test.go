package workload

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
)

func TestLayerDeterministicAndSized(t *testing.T) {
	spec := layerSpec{Seed: 42, Size: 3 << 20, RandomFrac: 0.5, Dir: "opt/x"}
	h1, h2 := sha256.New(), sha256.New()
	var n1 countingWriter
	r1, t1, err := writeLayer(io.MultiWriter(h1, &n1), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := writeLayer(h2, spec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h1.Sum(nil), h2.Sum(nil)) {
		t.Fatal("same spec, different bytes")
	}
	if d := n1.n - spec.Size; d > 0 || d < -8192 {
		t.Fatalf("layer is %d bytes, want about %d", n1.n, spec.Size)
	}
	if f := float64(r1) / float64(r1+t1); f < 0.4 || f > 0.6 {
		t.Fatalf("random fraction %.2f, want about 0.5", f)
	}
}

func BenchmarkText(b *testing.B) {
	g := newTextGen(1)
	buf := make([]byte, chunkSize)
	b.SetBytes(chunkSize)
	for b.Loop() {
		g.fill(buf)
	}
}

func BenchmarkLayer(b *testing.B) {
	b.SetBytes(64 << 20)
	for b.Loop() {
		writeLayer(io.Discard, layerSpec{Seed: 1, Size: 64 << 20, RandomFrac: 0.5, Dir: "x"})
	}
}

func TestPlanShape(t *testing.T) {
	w := Plan(1, 2<<30)
	if len(w.Images) != 30 {
		t.Fatalf("%d images", len(w.Images))
	}
	byID := map[string]*Layer{}
	var unique int64
	for _, l := range w.Layers {
		byID[l.ID] = l
		unique += l.Spec.Size
	}
	var sg bool
	for _, img := range w.Images {
		var s int64
		for _, id := range img.Layers {
			s += byID[id].Spec.Size
		}
		t.Logf("%-26s %4d MiB %d layers", img.Name, s>>20, len(img.Layers))
		sg = sg || img.Name == "pseven-secretgen"
	}
	if !sg {
		t.Fatal("no pseven-secretgen")
	}
	if d := float64(unique)/float64(2<<30) - 1; d > 0.01 || d < -0.01 {
		t.Fatalf("unique %d bytes, want 2 GiB", unique)
	}
	again := Plan(1, 2<<30)
	for i := range w.Layers {
		if w.Layers[i].Spec != again.Layers[i].Spec {
			t.Fatal("plan not deterministic")
		}
	}
}

// A Gzip layer is the Raw layer through compress/gzip: deterministic, and
// its diff_id is the Raw layer's digest.
func TestGzipLayer(t *testing.T) {
	spec := layerSpec{Seed: 7, Size: 1 << 20, RandomFrac: 0.5, Dir: "opt/y"}
	raw, err := encodeLayer(io.Discard, spec, Raw)
	if err != nil {
		t.Fatal(err)
	}
	if raw.DiffID != raw.Digest || raw.ContentSize != raw.Size {
		t.Fatalf("raw layer %+v: diff_id and content must be the blob's", raw)
	}
	var gz1, gz2 bytes.Buffer
	g1, err := encodeLayer(&gz1, spec, Gzip)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := encodeLayer(&gz2, spec, Gzip)
	if err != nil {
		t.Fatal(err)
	}
	if g1 != g2 || !bytes.Equal(gz1.Bytes(), gz2.Bytes()) {
		t.Fatal("same spec, different gzip bytes")
	}
	if s := sha256.Sum256(gz1.Bytes()); g1.Digest != "sha256:"+hex.EncodeToString(s[:]) || g1.Size != int64(gz1.Len()) {
		t.Fatalf("gzip blob %+v does not describe the bytes written", g1)
	}
	if g1.DiffID != raw.Digest || g1.ContentSize != raw.Size || g1.Random != raw.Random {
		t.Fatalf("gzip layer %+v, raw %+v: want the raw layer's digest as diff_id", g1, raw)
	}
	if g1.Size >= raw.Size {
		t.Fatalf("gzip layer %d bytes, raw %d: not compressed", g1.Size, raw.Size)
	}
	zr, err := gzip.NewReader(&gz1)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		t.Fatal(err)
	}
	if "sha256:"+hex.EncodeToString(h.Sum(nil)) != raw.Digest {
		t.Fatal("gunzipped layer differs from the raw one")
	}
	if a, b := Plan(1, 64<<20), PlanKind(1, 64<<20, Gzip); len(a.Layers) != len(b.Layers) || a.Layers[3].Spec != b.Layers[3].Spec || b.Kind != Gzip {
		t.Fatal("the gzip plan must carry the raw plan's content")
	}
}
