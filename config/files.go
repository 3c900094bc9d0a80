package config

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
)

// openSetting opens a file named by a setting (the YAML file, a CA
// bundle, an htpasswd or password file) for reading. Errors are the
// operating system's without the path, which the KeyError around them
// names already.
func openSetting(path string) (*os.File, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the operator names this file in their own configuration; opening it is the point
	if err != nil {
		return nil, unwrapPath(err)
	}
	return f, nil
}

// readSetting reads a whole file named by a setting (see openSetting).
func readSetting(path string) (data []byte, err error) {
	f, err := openSetting(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = unwrapPath(cerr)
		}
	}()
	data, err = io.ReadAll(f)
	if err != nil {
		return nil, unwrapPath(err)
	}
	return data, nil
}

// checkReadable requires a regular file that can be opened for reading.
func checkReadable(path string) (err error) {
	f, err := openSetting(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = unwrapPath(cerr)
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return unwrapPath(err)
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if _, err := f.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
		return unwrapPath(err)
	}
	return nil
}

// checkJSONFile requires a readable file holding one JSON object. The
// error never quotes the content.
func checkJSONFile(path string) error {
	if err := checkReadable(path); err != nil {
		return err
	}
	data, err := readSetting(path)
	if err != nil {
		return err
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(data, &v); err != nil {
		return errors.New("not a JSON object (want a Docker config.json)")
	}
	return nil
}

// unwrapPath drops the *fs.PathError around err: the KeyError that
// reports it names the path already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
