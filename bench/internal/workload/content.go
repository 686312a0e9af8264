package workload

import (
	"archive/tar"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Layer content: a tar stream of files, each either random bytes (like
// compiled binaries and already-compressed assets) or text-like bytes (like
// source, configs and logs: words drawn from a Zipf-like vocabulary, with
// numbers mixed in). Everything derives from the layer's seed, so a layer's
// digest depends only on (seed, size, random fraction). Nothing is held in
// memory beyond one chunk.

// chunkSize is how much content is generated at a time.
const chunkSize = 256 << 10

// vocabulary is shared by every text file: pseudo-words built from syllables
// plus code and log tokens, and a 64 Ki-entry table picking them with a
// Zipf-like distribution (word i ~ 1/(i+1)).
type vocabulary struct {
	words [][]byte
	table [1 << 16]uint16
}

var vocab = newVocabulary()

func newVocabulary() *vocabulary {
	v := &vocabulary{}
	common := []string{"the", "of", "and", "to", "in", "is", "for", "if", "err", "return", "nil", "func",
		"{", "}", "=", ":=", "value", "name", "error", "string", "int", "true", "false", "self", "def",
		"import", "from", "class", "const", "var", "INFO", "DEBUG", "WARN", "request", "response",
		"pseven", "block", "workflow", "model", "data", "user", "file", "path", "config", "server"}
	for _, w := range common {
		v.words = append(v.words, []byte(w))
	}
	syll := []string{"ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "xa", "ver", "con", "pro",
		"ment", "tion", "able", "ing", "er", "al", "ic", "ed", "un", "re", "st", "tr", "ph", "qu", "zo"}
	r := rand.New(rand.NewPCG(7, 11))
	for len(v.words) < 4096 {
		n := 1 + r.IntN(4)
		var w []byte
		for range n {
			w = append(w, syll[r.IntN(len(syll))]...)
		}
		if r.IntN(5) == 0 {
			w = append(w, '_')
			w = append(w, syll[r.IntN(len(syll))]...)
		}
		v.words = append(v.words, w)
	}
	// Zipf-like: the share of word i is proportional to 1/(i+1).
	var total float64
	for i := range v.words {
		total += 1 / float64(i+1)
	}
	pos := 0
	var acc float64
	for i := range v.words {
		acc += 1 / float64(i+1)
		end := int(math.Round(acc / total * float64(len(v.table))))
		for ; pos < end && pos < len(v.table); pos++ {
			v.table[pos] = uint16(i)
		}
	}
	for ; pos < len(v.table); pos++ {
		v.table[pos] = uint16(len(v.words) - 1)
	}
	return v
}

// textGen fills buffers with text-like bytes.
type textGen struct {
	r     *rand.PCG
	store []byte // generated text; pend is the part not yet handed out
	pend  []byte
	col   int
}

func newTextGen(seed uint64) *textGen {
	return &textGen{r: rand.NewPCG(seed, 0x7e47), store: make([]byte, 0, 64<<10+256)}
}

// fill writes exactly len(p) text bytes into p.
func (g *textGen) fill(p []byte) {
	for len(p) > 0 {
		if len(g.pend) == 0 {
			g.refill()
		}
		n := copy(p, g.pend)
		g.pend, p = g.pend[n:], p[n:]
	}
}

// refill generates about 64 KiB of text.
func (g *textGen) refill() {
	buf := g.store[:0]
	for len(buf) < 64<<10 {
		x := g.r.Uint64()
		for range 3 {
			w := vocab.words[vocab.table[uint16(x)]]
			x >>= 16
			buf = append(buf, w...)
			g.col += len(w) + 1
			if g.col > 72 {
				buf = append(buf, '\n')
				g.col = 0
			} else {
				buf = append(buf, ' ')
			}
		}
		// The top 16 bits: now and then a number, as in logs and data files.
		if x&0x7 == 0 {
			buf = strconv.AppendUint(buf, x>>3, 10)
			buf = append(buf, ' ')
		}
	}
	g.store, g.pend = buf, buf
}

// layerSpec describes one generated layer.
type layerSpec struct {
	Seed       uint64
	Size       int64   // target size of the tar stream
	RandomFrac float64 // share of file bytes that are random
	Dir        string  // directory inside the layer
}

// writeLayer streams the layer's tar to w and returns the bytes of random and
// text file content written.
func writeLayer(w io.Writer, spec layerSpec) (randomBytes, textBytes int64, err error) {
	tw := tar.NewWriter(w)
	r := rand.New(rand.NewPCG(spec.Seed, 0x1a7e))
	chacha := rand.NewChaCha8(seedBytes(spec.Seed))
	text := newTextGen(spec.Seed ^ 0x9e3779b97f4a7c15)
	buf := make([]byte, chunkSize)
	// Headers and padding cost up to 1 KiB per file; budget content to reach Size.
	remaining := spec.Size - 1024 // end-of-archive blocks
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: spec.Dir + "/", Mode: 0o755,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return 0, 0, err
	}
	remaining -= 512
	for i := 0; remaining > 512; i++ {
		// File sizes log-uniform between 4 KiB and 4 MiB.
		size := int64(math.Exp(math.Log(4<<10) + r.Float64()*(math.Log(4<<20)-math.Log(4<<10))))
		size = min(size, max(spec.Size/8, 4<<10), remaining-512)
		size = max(size, 0)
		isRandom := float64(randomBytes) < spec.RandomFrac*float64(randomBytes+textBytes+size)
		name, mode := fmt.Sprintf("%s/f%05d.txt", spec.Dir, i), int64(0o644)
		if isRandom {
			name, mode = fmt.Sprintf("%s/f%05d.bin", spec.Dir, i), 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size,
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return randomBytes, textBytes, err
		}
		for left := size; left > 0; {
			n := min(left, int64(len(buf)))
			if isRandom {
				chacha.Read(buf[:n])
			} else {
				text.fill(buf[:n])
			}
			if _, err := tw.Write(buf[:n]); err != nil {
				return randomBytes, textBytes, err
			}
			left -= n
		}
		if isRandom {
			randomBytes += size
		} else {
			textBytes += size
		}
		remaining -= 512 + (size+511)/512*512
	}
	return randomBytes, textBytes, tw.Close()
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	r := rand.NewPCG(seed, 0xc4ac4a)
	for i := 0; i < 32; i += 8 {
		x := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
	return b
}
