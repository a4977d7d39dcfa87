// Package model finds the weight files of a model on disk and turns them,
// with what their publisher vouched for, into a [vram.ModelRequest].
//
// A model is one of:
//
//   - a directory: the *.safetensors files its model.safetensors.index.json
//     lists (every one must be there), or, without an index, every
//     *.safetensors file at its top level, or else its GGUF file or the
//     parts of one split GGUF file;
//   - a single .safetensors file;
//   - a GGUF file, or any part of a split GGUF file
//     (NAME-00001-of-00003.gguf), which brings every part.
//
// Every weight file becomes one shard, in name order (the index order of
// split files). Files are opened through an [os.Root], so no path or
// symbolic link leads out of the directory that holds the model, and only
// regular files are read. A GGUF file's tensor table is parsed (strictly,
// by [tensor.ParseGGUF]) before anything is sealed; a safetensors header is
// parsed from the bytes as they stream.
//
// Published digests are checked against the flat SHA-256 that the seal
// computes while it copies each file, so a signature costs no second pass
// over the weights: [Layout.Request] gives each file a check that the seal
// runs before it signs. The small non-weight files a signature lists
// (config, index, tokenizer) are hashed and checked before the seal.
package model

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/tensor"
	"github.com/vramseal/vramseal/vram"
)

// Limits on what a model directory may hold.
const (
	// MaxIndexSize bounds model.safetensors.index.json.
	MaxIndexSize = 16 << 20
	// MaxEntries bounds the files and directories walked in a model
	// directory.
	MaxEntries = 100_000
)

// IndexFile is the Hugging Face index of a sharded safetensors model.
const IndexFile = "model.safetensors.index.json"

// ErrInvalid is wrapped by every error about a model's files (missing,
// malformed, not regular, outside the directory), as opposed to I/O
// failures. It matches [vram.ErrInvalidInput] too.
var ErrInvalid = fmt.Errorf("%w: model", vram.ErrInvalidInput)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ignored are the paths model_signing leaves out of a signature by
// default; they are never weights either.
var ignored = map[string]bool{".git": true, ".github": true, ".gitignore": true, ".gitattributes": true}

// File is one weight file of a model.
type File struct {
	// Name is the file's path inside the model directory, slash
	// separated; for a model given as a file, its base name.
	Name string
	// Resource is the name a signature gives the file: Name, or
	// [provenance.SingleFile] for a single-file model.
	Resource string
	Size     int64
	// Format is [vram.FormatSafetensors] or [vram.FormatGGUF].
	Format string
	// Tensors is the parsed GGUF tensor table (nil for safetensors, whose
	// header is parsed while it streams), and TensorsHeader the SHA-256
	// of the header bytes it was parsed from, which the seal checks.
	Tensors       *tensor.Map
	TensorsHeader seal.Hash
}

// Layout is a model found on disk. Close it when done.
type Layout struct {
	// Name is the directory's or file's base name (the default model ID
	// comes from it).
	Name string
	// Dir tells a model directory from a model given as a file.
	Dir bool
	// Weights are the weight files, in shard order.
	Weights []File
	// Others are the directory's other regular files (slash separated,
	// sorted): not sealed, but checked when a signature lists them.
	Others []string

	root *os.Root // the directory the names are relative to
}

// Close releases the layout's directory.
func (l *Layout) Close() error {
	if l.root == nil {
		return nil
	}
	return l.root.Close()
}

// UploadLayout is the layout of a single weight file that arrives as a
// stream, named name (its base name): the caller sets the file's size,
// format and Open in the request that [Layout.Request] returns.
func UploadLayout(name string) *Layout {
	return &Layout{Name: name, Weights: []File{{Name: name, Resource: provenance.SingleFile}}}
}

var splitGGUF = regexp.MustCompile(`^(.+)-([0-9]{5})-of-([0-9]{5})\.gguf$`)

// Open finds the model at rel inside root: a directory or a weight file.
func Open(root *os.Root, rel string) (*Layout, error) {
	rel = path.Clean(strings.ReplaceAll(rel, `\`, "/"))
	st, err := root.Stat(rel)
	if err != nil {
		return nil, openError(rel, err)
	}
	if st.IsDir() {
		sub, err := root.OpenRoot(rel)
		if err != nil {
			return nil, openError(rel, err)
		}
		l := &Layout{Name: baseName(rel, root), Dir: true, root: sub}
		if err := l.scanDir(); err != nil {
			sub.Close()
			return nil, err
		}
		return l, nil
	}
	if !st.Mode().IsRegular() {
		return nil, invalid("%s is not a regular file or a directory", quote(rel))
	}
	dir, base := path.Split(rel)
	if dir == "" {
		dir = "."
	}
	sub, err := root.OpenRoot(dir)
	if err != nil {
		return nil, openError(dir, err)
	}
	l := &Layout{Name: base, root: sub}
	if err := l.scanFile(base); err != nil {
		sub.Close()
		return nil, err
	}
	return l, nil
}

// baseName is the last element of rel, or of the root's own name for ".".
func baseName(rel string, root *os.Root) string {
	if rel == "." {
		rel = strings.TrimRight(root.Name(), "/")
	}
	return path.Base(strings.ReplaceAll(rel, `\`, "/"))
}

func openError(rel string, err error) error {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return invalid("%s does not exist", quote(rel))
	case errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes"):
		return invalid("%s leads outside the model directory", quote(rel))
	case errors.Is(err, fs.ErrPermission):
		return invalid("%s cannot be read: permission denied", quote(rel))
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENAMETOOLONG):
		return invalid("%s: %v", quote(rel), errors.Unwrap(err))
	}
	return fmt.Errorf("model: %s: %w", quote(rel), err)
}

func quote(s string) string { return strconv.QuoteToGraphic(s) }

// scanFile lays out a model given as one file.
func (l *Layout) scanFile(base string) error {
	switch {
	case strings.HasSuffix(base, ".safetensors"):
		f, err := l.weight(base, vram.FormatSafetensors)
		if err != nil {
			return err
		}
		f.Resource = provenance.SingleFile
		l.Weights = []File{f}
		return nil
	case splitGGUF.MatchString(base):
		return l.addSplit(base)
	case strings.HasSuffix(base, ".gguf"):
		f, err := l.weight(base, vram.FormatGGUF)
		if err != nil {
			return err
		}
		f.Resource = provenance.SingleFile
		l.Weights = []File{f}
		return nil
	default:
		return invalid("%s is neither a .safetensors nor a .gguf file", quote(base))
	}
}

// addSplit adds every part of the split GGUF file that name is part of.
func (l *Layout) addSplit(name string) error {
	m := splitGGUF.FindStringSubmatch(path.Base(name))
	dir := path.Dir(name)
	n, _ := strconv.Atoi(m[3])
	if n < 1 {
		return invalid("%s: a split GGUF file of 0 parts", quote(name))
	}
	for i := 1; i <= n; i++ {
		part := fmt.Sprintf("%s-%05d-of-%05d.gguf", m[1], i, n)
		if dir != "." {
			part = dir + "/" + part
		}
		f, err := l.weight(part, vram.FormatGGUF)
		if err != nil {
			return fmt.Errorf("part %d of %d of split GGUF %s: %w", i, n, quote(m[1]), err)
		}
		l.Weights = append(l.Weights, f)
	}
	return nil
}

// weight stats and, for GGUF, parses one weight file.
func (l *Layout) weight(name, format string) (File, error) {
	fh, st, err := l.open(name)
	if err != nil {
		return File{}, err
	}
	defer fh.Close()
	if st.Size() == 0 {
		return File{}, invalid("%s is empty", quote(name))
	}
	f := File{Name: name, Resource: name, Size: st.Size(), Format: format}
	if format == vram.FormatGGUF {
		tm, err := tensor.ParseGGUF(fh, st.Size())
		if err != nil {
			return File{}, fmt.Errorf("%w: %s: %w", ErrInvalid, quote(name), err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(fh, 0, tm.DataStart)); err != nil {
			return File{}, fmt.Errorf("model: read %s: %w", quote(name), err)
		}
		f.Tensors = tm
		h.Sum(f.TensorsHeader[:0])
	}
	return f, nil
}

// open opens a regular file inside the layout's directory.
func (l *Layout) open(name string) (*os.File, os.FileInfo, error) {
	// Stat first: opening a FIFO or a device could block or have effects.
	st, err := l.root.Stat(name)
	if err != nil {
		return nil, nil, openError(name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, invalid("%s is not a regular file", quote(name))
	}
	// O_NONBLOCK: a file swapped for a FIFO after the Stat must not block
	// the open (reads of a regular file ignore the flag).
	fh, err := l.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, openError(name, err)
	}
	st, err = fh.Stat()
	if err != nil || !st.Mode().IsRegular() {
		fh.Close()
		return nil, nil, invalid("%s is not a regular file", quote(name))
	}
	return fh, st, nil
}

// scanDir lays out a model directory.
func (l *Layout) scanDir() error {
	var all []string
	entries := 0
	err := fs.WalkDir(l.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return openError(p, err)
		}
		if p == "." {
			return nil
		}
		if entries++; entries > MaxEntries {
			return invalid("the model directory holds more than %d entries", MaxEntries)
		}
		if !strings.Contains(p, "/") && ignored[p] {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
			// FIFOs, sockets and devices are never model files: one
			// named as a weight is an error, others are left out.
			if strings.HasSuffix(p, ".safetensors") || strings.HasSuffix(p, ".gguf") || p == IndexFile {
				return invalid("%s is not a regular file", quote(p))
			}
			return nil
		}
		all = append(all, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(all)
	weights, err := l.weightNames(all)
	if err != nil {
		return err
	}
	isWeight := map[string]bool{}
	for _, w := range weights {
		if isWeight[w.name] {
			continue
		}
		isWeight[w.name] = true
		f, err := l.weight(w.name, w.format)
		if err != nil {
			return err
		}
		l.Weights = append(l.Weights, f)
	}
	for _, p := range all {
		if !isWeight[p] {
			l.Others = append(l.Others, p)
		}
	}
	return nil
}

type weightName struct{ name, format string }

// weightNames picks a directory's weight files from all its files.
func (l *Layout) weightNames(all []string) ([]weightName, error) {
	present := map[string]bool{}
	for _, p := range all {
		present[p] = true
	}
	if present[IndexFile] {
		names, err := l.readIndex()
		if err != nil {
			return nil, err
		}
		var out []weightName
		for _, n := range names {
			if !present[n] {
				return nil, invalid("%s lists %s, which is not in the model directory", IndexFile, quote(n))
			}
			out = append(out, weightName{n, vram.FormatSafetensors})
		}
		return out, nil
	}
	var st, gguf []string
	for _, p := range all {
		if strings.Contains(p, "/") {
			continue
		}
		switch {
		case strings.HasSuffix(p, ".safetensors"):
			st = append(st, p)
		case strings.HasSuffix(p, ".gguf"):
			gguf = append(gguf, p)
		}
	}
	var out []weightName
	switch {
	case len(st) > 0:
		for _, n := range st {
			out = append(out, weightName{n, vram.FormatSafetensors})
		}
	case len(gguf) == 1 && !splitGGUF.MatchString(gguf[0]):
		out = append(out, weightName{gguf[0], vram.FormatGGUF})
	case len(gguf) > 0:
		// Parts of one split file, or several models: addSplit checks
		// that they are all parts of one.
		before := len(l.Weights)
		if !splitGGUF.MatchString(gguf[0]) {
			return nil, invalid("the directory holds %d GGUF files that are not the parts of one split file: give one of them", len(gguf))
		}
		if err := l.addSplit(gguf[0]); err != nil {
			return nil, err
		}
		if len(l.Weights)-before != len(gguf) {
			return nil, invalid("the directory holds %d GGUF files, but split %s has %d parts: give one of them", len(gguf), quote(gguf[0]), len(l.Weights)-before)
		}
		for _, f := range l.Weights[before:] {
			out = append(out, weightName{f.Name, f.Format})
		}
		l.Weights = l.Weights[:before]
	default:
		return nil, invalid("the model directory holds no *.safetensors or *.gguf weight files")
	}
	return out, nil
}

// readIndex returns the weight files model.safetensors.index.json names,
// sorted.
func (l *Layout) readIndex() ([]string, error) {
	fh, st, err := l.open(IndexFile)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if st.Size() > MaxIndexSize {
		return nil, invalid("%s is %d bytes, the limit is %d", IndexFile, st.Size(), MaxIndexSize)
	}
	var idx struct {
		Metadata  json.RawMessage   `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	dec := json.NewDecoder(io.LimitReader(fh, MaxIndexSize))
	if err := dec.Decode(&idx); err != nil {
		return nil, invalid("%s is not valid JSON: %v", IndexFile, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, invalid("%s has no weight_map entries", IndexFile)
	}
	seen := map[string]bool{}
	var names []string
	for tensorName, file := range idx.WeightMap {
		if file == "" || path.IsAbs(file) || path.Clean(file) != file || strings.HasPrefix(file, "../") || file == ".." ||
			strings.ContainsAny(file, "\\\x00") || !strings.HasSuffix(file, ".safetensors") {
			return nil, invalid("%s maps tensor %s to %s, which is not a .safetensors file inside the directory", IndexFile, quote(tensorName), quote(file))
		}
		if !seen[file] {
			seen[file] = true
			names = append(names, file)
		}
	}
	sort.Strings(names)
	return names, nil
}

// DefaultID turns the layout's name into a model ID: characters a shard ID
// cannot hold become '-', and a split GGUF loses its part suffix.
func (l *Layout) DefaultID() string {
	name := l.Name
	if m := splitGGUF.FindStringSubmatch(name); m != nil {
		name = m[1]
	}
	name = strings.TrimSuffix(strings.TrimSuffix(name, ".safetensors"), ".gguf")
	var b strings.Builder
	for _, r := range name {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	id := strings.Trim(b.String(), "-")
	if len(id) > vram.MaxModelIDLen {
		id = id[:vram.MaxModelIDLen]
	}
	if id == "" {
		id = "model"
	}
	return id
}

// Expectation says what the publisher vouched for: the digests every
// weight file must have, and how they were obtained.
type Expectation struct {
	Expect     *provenance.Expect
	Provenance provenance.Provenance
}

// Check checks the expectation against the layout before anything is
// sealed: every weight file must be covered, every file it lists must be
// present, and the non-weight files it lists must match.
func (l *Layout) Check(e *Expectation) error {
	if e == nil || e.Expect == nil {
		return nil
	}
	listed := map[string]bool{}
	for _, n := range e.Expect.Files() {
		listed[n] = true
	}
	present := make([]string, 0, len(l.Weights)+len(l.Others))
	for _, w := range l.Weights {
		if !listed[w.Resource] {
			return fmt.Errorf("%s: %w: %s", e.Provenance.Method, provenance.ErrNotCovered, quote(w.Resource))
		}
		present = append(present, w.Resource)
	}
	var others []string
	for _, o := range l.Others {
		if listed[o] {
			others = append(others, o)
		}
		present = append(present, o)
	}
	if missing := e.Expect.Missing(present); len(missing) > 0 {
		return invalid("%s lists %d files that are not in the model, first %s", e.Provenance.Method, len(missing), quote(missing[0]))
	}
	return e.Expect.CheckFilesIn(l.root, others)
}

// Request returns the request that seals the layout as model id. Each
// file's flat digest, computed by the seal, is checked against e (nil
// checks nothing) before its seal is signed; the file is reopened for the
// seal and must still have the size it had when the layout was made.
func (l *Layout) Request(id, ref string, e *Expectation, devices []int) vram.ModelRequest {
	req := vram.ModelRequest{ID: id, Ref: ref, Devices: devices}
	if e != nil {
		req.Provenance = e.Provenance
	}
	for _, w := range l.Weights {
		w := w
		mf := vram.ModelFile{Name: w.Name, Size: w.Size, Format: w.Format, Tensors: w.Tensors, TensorsHeader: w.TensorsHeader,
			Open: func() (io.ReadCloser, error) {
				fh, st, err := l.open(w.Name)
				if err != nil {
					return nil, err
				}
				if st.Size() != w.Size {
					fh.Close()
					return nil, invalid("%s changed while the model was loaded: %d bytes, was %d", quote(w.Name), st.Size(), w.Size)
				}
				return fh, nil
			}}
		if e != nil && e.Expect != nil {
			mf.Check = func(d seal.Hash) error { return e.Expect.Check(w.Resource, d) }
		}
		req.Files = append(req.Files, mf)
	}
	return req
}

// ExpectSHA256 expects the one weight file of the layout to have the
// digest hex (64 hex digits).
func (l *Layout) ExpectSHA256(hex string) (*Expectation, error) {
	sum, err := provenance.ParseSHA256(hex)
	if err != nil {
		return nil, invalid("expected SHA-256: %v", err)
	}
	if len(l.Weights) != 1 {
		return nil, invalid("an expected SHA-256 is for a model of one weight file; this one has %d: give expected digests (a sha256sum file)", len(l.Weights))
	}
	return &Expectation{
		Expect:     provenance.NewExpect(provenance.Digests{l.Weights[0].Resource: sum}),
		Provenance: provenance.Provenance{Verified: true, Method: provenance.MethodSHA256},
	}, nil
}

// ExpectDigests expects the digests of a sha256sum file (at most
// [provenance.MaxBundleSize] bytes). For a model given as one file, the
// entry for its base name is the one that counts.
func (l *Layout) ExpectDigests(r io.Reader) (*Expectation, error) {
	d, err := provenance.ParseSHA256Sums(io.LimitReader(r, provenance.MaxBundleSize))
	if err != nil {
		return nil, invalid("expected digests: %v", err)
	}
	if !l.Dir && len(l.Weights) == 1 {
		sum, ok := d[path.Base(l.Weights[0].Name)]
		if !ok {
			return nil, fmt.Errorf("expected digests: %w: %s", provenance.ErrNotCovered, quote(l.Weights[0].Name))
		}
		d = provenance.Digests{l.Weights[0].Resource: sum}
	} else if !l.Dir {
		// Split GGUF parts are named by their base names.
		keep := provenance.Digests{}
		for _, w := range l.Weights {
			base := path.Base(w.Name)
			if sum, ok := d[base]; ok {
				keep[w.Resource] = sum
			}
		}
		d = keep
	}
	return &Expectation{
		Expect:     provenance.NewExpect(d),
		Provenance: provenance.Provenance{Verified: true, Method: provenance.MethodDigests},
	}, nil
}

// ExpectSignature verifies an OpenSSF model-signing bundle with the
// publisher's public key (PEM) and expects the digests it signs. The
// signed name is kept in the provenance; the binding to the model is the
// digests.
func ExpectSignature(bundle, publicKey []byte) (*Expectation, error) {
	key, err := provenance.ParsePublicKey(publicKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	st, err := provenance.VerifyBundle(bundle, key)
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	return &Expectation{Expect: provenance.NewExpect(st.Files), Provenance: st.Provenance(key)}, nil
}
