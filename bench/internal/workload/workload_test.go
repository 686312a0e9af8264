package workload

import (
	"bytes"
	"crypto/sha256"
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
