// Package atomicfile writes whole files so that a reader, a crash or a
// full disk never sees one half-written at its final path: the data goes
// to a temp file beside it (mode set before the first byte, fsynced), which
// is then renamed (Write) or hard-linked (Create, never replacing) into place.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/p7bundle/p7bundle/internal/writeback"
)

// CheckDir says whether a file can be created in dir, by creating and
// removing one: commands check their output directories before any work.
func CheckDir(dir string) error {
	f, err := os.CreateTemp(dir, ".p7bundle-probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// Write replaces path with data.
func Write(path string, data []byte, mode os.FileMode) error {
	return WriteFunc(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc replaces path with what fill writes, streamed; on any error
// nothing is left at path.
func WriteFunc(path string, mode os.FileMode, fill func(io.Writer) error) error {
	return write(path, mode, fill, func(tmp string) error { return os.Rename(tmp, path) })
}

// Create writes path, which must not exist; the error wraps os.ErrExist
// when it does. For files that are never overwritten: keys, secrets, backups.
func Create(path string, data []byte, mode os.FileMode) error {
	return CreateFunc(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// CreateFunc is Create with what fill writes, streamed.
func CreateFunc(path string, mode os.FileMode, fill func(io.Writer) error) error {
	return write(path, mode, fill, func(tmp string) error {
		if err := os.Link(tmp, path); err != nil {
			return fmt.Errorf("%s: %w (never overwritten)", path, err)
		}
		return nil
	})
}

func write(path string, mode os.FileMode, fill func(io.Writer) error, commit func(tmp string) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	// The mode first: a secret is never readable by others, even half-written.
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := fill(writeback.New(tmp)); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return commit(tmp.Name())
}
