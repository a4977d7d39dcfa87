package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
)

// segReader reads the lines of one segment and hashes every byte it reads.
type segReader struct {
	f    File
	br   *bufio.Reader
	h    hash.Hash
	line int   // number of the line last returned, 1-based
	off  int64 // offset of the line last returned
	next int64 // offset after it
	acc  []byte
	eof  bool // an unterminated line was returned
}

var errLineTooLong = fmt.Errorf("%w: line longer than %d bytes", errMalformed, maxLineBytes)

func openSegment(fsys FS, path string) (*segReader, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	return &segReader{f: f, h: h, br: bufio.NewReaderSize(io.TeeReader(f, h), 64<<10)}, nil
}

func (s *segReader) Close() error { return s.f.Close() }

// read returns the next line without its newline, whether it was
// terminated, and io.EOF after the last line. A line longer than
// maxLineBytes returns errLineTooLong. The line is valid until the next
// call.
func (s *segReader) read() ([]byte, bool, error) {
	s.off = s.next
	if s.eof {
		// The file may be growing (a live segment): never read past an
		// unterminated line, or its rest would look like a new line.
		return nil, false, io.EOF
	}
	frag, err := s.br.ReadSlice('\n')
	if err == nil {
		s.line++
		s.next += int64(len(frag))
		return frag[:len(frag)-1], true, nil
	}
	// A line longer than maxLineBytes is read to its end, so the line
	// count and offsets stay right, but only its first maxLineBytes+1
	// bytes are kept.
	s.acc = append(s.acc[:0], frag...)
	n := len(frag)
	for errors.Is(err, bufio.ErrBufferFull) {
		frag, err = s.br.ReadSlice('\n')
		n += len(frag)
		if keep := maxLineBytes + 1 - len(s.acc); keep > 0 {
			s.acc = append(s.acc, frag[:min(keep, len(frag))]...)
		}
	}
	s.next += int64(n)
	switch {
	case err == nil:
		s.line++
		if n-1 > maxLineBytes {
			return nil, true, errLineTooLong
		}
		return s.acc[:len(s.acc)-1], true, nil
	case err == io.EOF && n > 0:
		s.line++
		s.eof = true
		if n > maxLineBytes {
			return nil, false, errLineTooLong
		}
		return s.acc, false, nil
	case err == io.EOF:
		return nil, false, io.EOF
	}
	return nil, false, err
}

// sum returns the SHA-256 of everything read so far.
func (s *segReader) sum() (d [32]byte) {
	s.h.Sum(d[:0])
	return d
}

// checksumLine is the contents of a checksum file, in the format of
// `sha256sum` (two spaces, binary mode not marked).
func checksumLine(sum [32]byte, name string) []byte {
	b := appendHex(nil, sum[:])
	b = append(b, "  "...)
	b = append(b, name...)
	return append(b, '\n')
}

// readChecksum reads <segment>.sha256 and returns the digest it names.
func readChecksum(fsys FS, dir, name string) ([32]byte, error) {
	var sum [32]byte
	b, err := readFile(fsys, filepath.Join(dir, name+checksumSuffix), 4096)
	if err != nil {
		return sum, err
	}
	want := len(b) == 64+2+len(name)+1 && bytes.Equal(b[64:], []byte("  "+name+"\n"))
	if !want || !parseHex32(string(b[:64]), &sum) {
		return sum, fmt.Errorf("checksum file %s is not \"<sha256>  %s\"", name+checksumSuffix, name)
	}
	return sum, nil
}
