package bundle

import (
	"encoding/binary"
	"errors"

	"github.com/cespare/xxhash/v2"
)

// Raw frames hold already-compressed content (gzip or zstd layers, the
// chart) as zstd Raw_Blocks (RFC 8878 §3.1.1.2.2): the bytes themselves,
// a 3-byte header per block and the frame's checksum. Entropy coding such
// bytes costs CPU for no gain; any zstd decoder reads raw blocks.
// klauspost/compress has no option that skips match finding, hence this.
const (
	rawBlockMax = 128 << 10 // Block_Maximum_Size
	// Frame_Header_Descriptor: a 4-byte Frame_Content_Size (flag 2),
	// Single_Segment (the window is the content), Content_Checksum.
	rawFrameDescriptor = 2<<6 | 1<<5 | 1<<2
	rawBlockType       = 0
)

// rawFrameSize is the size of in written as a raw frame.
func rawFrameSize(n int) int {
	blocks := max(1, (n+rawBlockMax-1)/rawBlockMax)
	return 4 + 1 + 4 + blocks*3 + n + 4
}

// appendRawFrame appends in to dst as one zstd frame of raw blocks.
func appendRawFrame(dst, in []byte) []byte {
	sum := xxhash.Sum64(in)
	dst = binary.LittleEndian.AppendUint32(dst, zstdFrameMagic)
	dst = append(dst, rawFrameDescriptor)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(in)))
	for {
		n := min(len(in), rawBlockMax)
		h := uint32(n)<<3 | rawBlockType<<1
		if n == len(in) {
			h |= 1 // Last_Block
		}
		dst = append(dst, byte(h), byte(h>>8), byte(h>>16))
		dst = append(dst, in[:n]...)
		in = in[n:]
		if len(in) == 0 {
			break
		}
	}
	return binary.LittleEndian.AppendUint32(dst, uint32(sum))
}

// rawFrameContent returns the content of frame when it is a raw frame of
// dSize bytes, moving the blocks' bytes together in place over the block
// headers: reading such a frame needs no second buffer and no decoder.
// ok is false when frame is not a raw frame (decode it instead); an error
// means it is one that does not check out.
func rawFrameContent(frame []byte, dSize int64) (content []byte, ok bool, err error) {
	const head = 4 + 1 + 4
	if len(frame) < head+3+4 || binary.LittleEndian.Uint32(frame) != zstdFrameMagic ||
		frame[4] != rawFrameDescriptor || int64(binary.LittleEndian.Uint32(frame[5:])) != dSize {
		return nil, false, nil
	}
	// First pass, headers only: every block raw, sizes adding up to the
	// content size, the checksum exactly at the end. Anything else goes to
	// the decoder, which judges it.
	var total int64
	r := head
	for {
		if r+3 > len(frame) {
			return nil, false, nil
		}
		h := uint32(frame[r]) | uint32(frame[r+1])<<8 | uint32(frame[r+2])<<16
		size := int(h >> 3)
		if (h>>1)&3 != rawBlockType || size > rawBlockMax || r+3+size > len(frame) {
			return nil, false, nil
		}
		r += 3 + size
		total += int64(size)
		if h&1 == 1 {
			break
		}
	}
	if total != dSize || r+4 != len(frame) {
		return nil, false, nil
	}
	sum := binary.LittleEndian.Uint32(frame[r:])
	// Second pass: move each block's bytes down over the headers.
	w, r := 0, head
	for {
		h := uint32(frame[r]) | uint32(frame[r+1])<<8 | uint32(frame[r+2])<<16
		size := int(h >> 3)
		w += copy(frame[w:], frame[r+3:r+3+size])
		r += 3 + size
		if h&1 == 1 {
			break
		}
	}
	content = frame[:w]
	if uint32(xxhash.Sum64(content)) != sum {
		return nil, true, errors.New("raw frame: checksum mismatch")
	}
	return content, true, nil
}
