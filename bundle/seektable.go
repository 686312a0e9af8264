package bundle

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The seek table is the zstd seekable format's (facebook/zstd
// contrib/seekable_format): a skippable frame at the end of the file
// listing each frame's compressed and decompressed size, then a footer of
// frame count, descriptor and magic. Decoders skip it; tools that know
// the format seek with it.
const (
	skippableMagic = 0x184D2A5E
	seekableMagic  = 0x8F92EAB1
	seekFooterSize = 9
	seekEntrySize  = 8 // no per-frame checksums: every frame carries its own
	// maxFrames bounds what a hostile table may make a reader allocate:
	// 4M frames of FrameSize is 16 TiB of tar.
	maxFrames = 1 << 22
)

// frame is one zstd frame: where it sits in the file and in the tar stream.
type frame struct {
	cOff, cSize int64
	dOff, dSize int64
}

// zstdFrameMagic starts every zstd frame (RFC 8878 §3.1.1).
const zstdFrameMagic = 0xFD2FB528

// appendSeekTable appends the skippable seek-table frame for frames.
func appendSeekTable(dst []byte, frames []frame) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, skippableMagic)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(frames)*seekEntrySize+seekFooterSize))
	for _, f := range frames {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(f.cSize))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(f.dSize))
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(frames)))
	dst = append(dst, 0) // descriptor: no checksums
	return binary.LittleEndian.AppendUint32(dst, seekableMagic)
}

// readSeekTable reads and checks the seek table at the end of a file of
// size bytes: the frames must tile the file up to the table exactly.
func readSeekTable(ra io.ReaderAt, size int64) ([]frame, error) {
	var foot [seekFooterSize]byte
	if size < 8+seekFooterSize {
		return nil, fmt.Errorf("%w: %d bytes is too short for a seek table", ErrCorrupt, size)
	}
	if _, err := ra.ReadAt(foot[:], size-seekFooterSize); err != nil {
		return nil, fmt.Errorf("reading the seek table: %w", err)
	}
	if binary.LittleEndian.Uint32(foot[5:]) != seekableMagic {
		var head [4]byte
		if _, err := ra.ReadAt(head[:], 0); err == nil && binary.LittleEndian.Uint32(head[:]) == zstdFrameMagic {
			// A zstd stream without its table: cut short, or format 1.
			return nil, fmt.Errorf("%w: the file ends at %d bytes with no seek table: an interrupted copy? (its sha256 will not match BUNDLE.sha256) or a format-1 bundle (rebuild it with this version of p7bundle)", ErrTruncated, size)
		}
		return nil, fmt.Errorf("%w: not a p7bundle archive (no zstd frame at the start, no seek table at the end)", ErrNotBundle)
	}
	if foot[4] != 0 {
		return nil, fmt.Errorf("%w: seek table descriptor %#x (want 0)", ErrCorrupt, foot[4])
	}
	n := int64(binary.LittleEndian.Uint32(foot[:4]))
	tableSize := 8 + n*seekEntrySize + seekFooterSize
	if n == 0 || n > maxFrames || tableSize > size {
		return nil, fmt.Errorf("%w: seek table claims %d frames in %d bytes", ErrCorrupt, n, size)
	}
	table := make([]byte, tableSize)
	start := size - tableSize
	if _, err := ra.ReadAt(table, start); err != nil {
		return nil, fmt.Errorf("reading the seek table: %w", err)
	}
	if binary.LittleEndian.Uint32(table) != skippableMagic || int64(binary.LittleEndian.Uint32(table[4:])) != tableSize-8 {
		return nil, fmt.Errorf("%w: seek table frame header", ErrCorrupt)
	}
	frames := make([]frame, n)
	var cOff, dOff int64
	for i := range frames {
		e := table[8+i*seekEntrySize:]
		f := frame{cOff: cOff, cSize: int64(binary.LittleEndian.Uint32(e)), dOff: dOff, dSize: int64(binary.LittleEndian.Uint32(e[4:]))}
		if f.cSize == 0 || f.dSize == 0 || f.dSize > FrameSize {
			return nil, fmt.Errorf("%w: seek table: frame %d has %d compressed, %d uncompressed bytes", ErrCorrupt, i, f.cSize, f.dSize)
		}
		frames[i] = f
		cOff += f.cSize
		dOff += f.dSize
	}
	if cOff != start {
		return nil, fmt.Errorf("%w: seek table: frames cover %d bytes, the table starts at %d", ErrCorrupt, cOff, start)
	}
	return frames, nil
}
