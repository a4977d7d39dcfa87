package cli

import (
	"errors"
	"os"
)

// createPrivate creates path for writing with mode 0600, refusing to
// replace an existing file: keys and secrets are never overwritten.
func createPrivate(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// finishPrivate writes data to f, makes it durable and closes it; on
// failure it removes the partial file.
func finishPrivate(f *os.File, data []byte) error {
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// writePrivate creates path (0600, new) holding data.
func writePrivate(path string, data []byte) error {
	f, err := createPrivate(path)
	if err != nil {
		return err
	}
	return finishPrivate(f, data)
}
