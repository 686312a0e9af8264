// Package atomicfile writes whole files so that a reader, a crash or a
// full disk never sees one half-written at its final path: the data goes
// to a temp file beside it (mode set before the first byte, fsynced), which
// is then renamed (Write) or hard-linked (Create, never replacing) into place.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/p7bundle/p7bundle/internal/writeback"
)

// ErrWrite marks a file that could not be put at its path (the directory
// refuses it, it exists and may not be replaced, the disk is full), as
// opposed to a failure of the input being written.
var ErrWrite = errors.New("cannot write")

type writeError struct {
	path string
	err  error
}

func (e *writeError) Error() string   { return "writing " + e.path + ": " + e.err.Error() }
func (e *writeError) Unwrap() []error { return []error{e.err, ErrWrite} }

// Check fails, wrapping ErrWrite, when path could not be written: it is a
// directory, it exists (unless replace; the error wraps os.ErrExist), or
// its directory takes no new files. Commands call it before any work; the
// final write still never replaces a file created meanwhile.
func Check(path string, replace bool) error {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.IsDir():
		return &writeError{path, errors.New("it is a directory")}
	case err == nil && !replace:
		return &writeError{path, os.ErrExist}
	}
	if err := CheckDir(filepath.Dir(path)); err != nil {
		return &writeError{path, err}
	}
	return nil
}

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
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%w and is never overwritten", os.ErrExist)
			}
			return err
		}
		return nil
	})
}

func write(path string, mode os.FileMode, fill func(io.Writer) error, commit func(tmp string) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return &writeError{path, err}
	}
	defer os.Remove(tmp.Name())
	// The mode first: a secret is never readable by others, even half-written.
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return &writeError{path, err}
	}
	// fill's errors may be its input's: not marked ErrWrite.
	if err := fill(writeback.New(tmp)); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return &writeError{path, err}
	}
	if err := tmp.Close(); err != nil {
		return &writeError{path, err}
	}
	if err := commit(tmp.Name()); err != nil {
		return &writeError{path, err}
	}
	return nil
}
