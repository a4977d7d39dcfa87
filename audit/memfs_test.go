package audit

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// memFS is a read-only copy in memory of a log directory, for tests that
// run [Verify] over thousands of edited copies of a log: an edit is a
// change of files, and a Verify makes no system call. Writes, renames,
// removals and locks fail.
type memFS struct {
	dir   string
	files map[string][]byte // by base name
}

var _ FS = (*memFS)(nil)

var errMemReadOnly = errors.New("memFS: read-only")

// loadMemFS reads every file of dir (no subdirectories) into a memFS.
func loadMemFS(t testing.TB, dir string) *memFS {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &memFS{dir: dir, files: map[string][]byte{}}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			t.Fatalf("loadMemFS: %s is not a regular file", e.Name())
		}
		m.files[e.Name()] = must(os.ReadFile(filepath.Join(dir, e.Name())))
	}
	return m
}

// file returns the base name of path inside m's directory and its bytes.
func (m *memFS) file(op, path string) (string, []byte, error) {
	name := filepath.Base(path)
	b, ok := m.files[name]
	if !ok || filepath.Dir(path) != m.dir {
		return "", nil, &fs.PathError{Op: op, Path: path, Err: fs.ErrNotExist}
	}
	return name, b, nil
}

func (m *memFS) OpenFile(path string, flag int, _ fs.FileMode) (File, error) {
	if flag != os.O_RDONLY {
		return nil, &fs.PathError{Op: "open", Path: path, Err: errMemReadOnly}
	}
	name, b, err := m.file("open", path)
	if err != nil {
		return nil, err
	}
	return &memFile{Reader: bytes.NewReader(b), info: memInfo{name, int64(len(b))}}, nil
}

func (m *memFS) Stat(path string) (fs.FileInfo, error) {
	name, b, err := m.file("stat", path)
	if err != nil {
		return nil, err
	}
	return memInfo{name, int64(len(b))}, nil
}

func (m *memFS) ReadDir(path string) ([]fs.DirEntry, error) {
	if path != m.dir {
		return nil, &fs.PathError{Op: "readdir", Path: path, Err: fs.ErrNotExist}
	}
	out := make([]fs.DirEntry, 0, len(m.files))
	for name, b := range m.files {
		out = append(out, fs.FileInfoToDirEntry(memInfo{name, int64(len(b))}))
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (m *memFS) Rename(string, string) error     { return errMemReadOnly }
func (m *memFS) Remove(string) error             { return errMemReadOnly }
func (m *memFS) Mkdir(string, fs.FileMode) error { return errMemReadOnly }
func (m *memFS) Lock(string) (io.Closer, error)  { return nil, errMemReadOnly }
func (f *memFile) Write([]byte) (int, error)     { return 0, errMemReadOnly }
func (f *memFile) Truncate(int64) error          { return errMemReadOnly }
func (f *memFile) Sync() error                   { return nil }
func (f *memFile) Close() error                  { return nil }
func (f *memFile) Stat() (fs.FileInfo, error)    { return f.info, nil }
func (i memInfo) Name() string                   { return i.name }
func (i memInfo) Size() int64                    { return i.size }
func (memInfo) Mode() fs.FileMode                { return 0o600 }
func (memInfo) ModTime() time.Time               { return time.Time{} }
func (memInfo) IsDir() bool                      { return false }
func (memInfo) Sys() any                         { return nil }

// memFile is an open file of a memFS.
type memFile struct {
	*bytes.Reader
	info memInfo
}

// memInfo describes a file of a memFS.
type memInfo struct {
	name string
	size int64
}
