package auth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// Bounds of files the keychain reads.
const (
	// fileCheckInterval is how often, at most, a watched file is stat'ed.
	fileCheckInterval = time.Second
	// maxSecretFile bounds a password file and a Docker config.json.
	maxSecretFile = 1 << 20
)

// watchedFile is a small file parsed once and parsed again when its
// modification time or size changes. Lookups stat it at most once per
// fileCheckInterval. When the file becomes unreadable or unparsable after
// a successful load, the last good value is kept (a Kubernetes secret is
// swapped by renaming a symlink: a reader may catch the gap).
type watchedFile[T any] struct {
	path  string
	now   func() time.Time
	parse func([]byte) (T, error)

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	size    int64
	value   T
	loaded  bool
}

// get returns the file's current parsed value.
func (w *watchedFile[T]) get() (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if w.loaded && !w.checked.IsZero() && now.Sub(w.checked) < fileCheckInterval && now.Sub(w.checked) >= 0 {
		return w.value, nil
	}
	w.checked = now
	fi, err := os.Stat(w.path)
	if err == nil && w.loaded && fi.ModTime().Equal(w.modTime) && fi.Size() == w.size {
		return w.value, nil
	}
	var v T
	if err == nil {
		v, err = w.read()
	} else {
		err = pathError(w.path, err)
	}
	if err != nil {
		if w.loaded {
			return w.value, nil
		}
		var zero T
		return zero, err
	}
	w.value, w.modTime, w.size, w.loaded = v, fi.ModTime(), fi.Size(), true
	return v, nil
}

// read reads and parses the file, bounded by maxSecretFile. Errors name
// the path, never the content.
func (w *watchedFile[T]) read() (T, error) {
	var zero T
	f, err := os.Open(w.path)
	if err != nil {
		return zero, pathError(w.path, err)
	}
	defer f.Close() //nolint:errcheck // only read: closing reports nothing to act on
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return zero, pathError(w.path, err)
	}
	if len(data) > maxSecretFile {
		return zero, fmt.Errorf("%s: larger than %d bytes", w.path, maxSecretFile)
	}
	return w.parse(data)
}

// recheck makes the next get stat the file whatever the interval.
func (w *watchedFile[T]) recheck() {
	w.mu.Lock()
	w.checked = time.Time{}
	w.mu.Unlock()
}

// pathError formats a file error as "<path>: <reason>" without repeating
// the operation.
func pathError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s: %w", path, err)
}
