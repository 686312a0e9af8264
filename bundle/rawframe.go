package bundle

import (
	"encoding/binary"

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
