package tensor

import (
	"errors"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrMalformed is wrapped by every error that [ParseSafetensors],
// [ReadSafetensors] and [SafetensorsHeaderLen] return for bytes that break
// the format (as opposed to a failing reader): callers branch on it to tell
// a bad model file from an I/O error. [ParseGGUF] wraps it too.
var ErrMalformed = errors.New("tensor: malformed model file")

// Tensor is one tensor of a model file.
type Tensor struct {
	Name   string  // as the file names it (valid UTF-8)
	DType  string  // as the file names it: "BF16", "F16", "F32", "I32", "U8", ... for safetensors
	Shape  []int64 // dimensions, outermost first; empty for a scalar
	Offset int64   // absolute byte offset from the start of the file (for safetensors: 8 + header length + data_offsets[0])
	Length int64   // bytes
}

// End returns the offset just past the tensor's last byte.
func (t *Tensor) End() int64 { return t.Offset + t.Length }

// Map is a file's tensor table.
//
// Its invariants, which the parsers establish and [Map.Lookup] relies on:
// Tensors are sorted by Offset, then Length, then Name; every tensor lies in
// [DataStart, Size); tensors of nonzero length do not overlap; a tensor of
// length zero does not lie strictly inside another tensor.
type Map struct {
	Format    string            // "safetensors" or "gguf"
	Size      int64             // file size
	DataStart int64             // where tensor data begins (8+N for safetensors)
	Tensors   []Tensor          // sorted by Offset
	Metadata  map[string]string // safetensors "__metadata__" (string to string), nil when absent; GGUF scalar metadata

	// dataEnd is the end of the last tensor of nonzero length (DataStart
	// when there is none), 0 when not computed (a Map built by hand).
	dataEnd int64
}

// Regions of a file that hold no tensor bytes, in [Hit.Region].
const (
	RegionHeader   = "header"   // the format's header: [0, DataStart)
	RegionPadding  = "padding"  // bytes in the data area between tensors, or before the first one
	RegionTrailing = "trailing" // bytes after the end of the last tensor
)

// Hit is one thing a byte range of a file touches: part of a tensor, or a
// region without tensor bytes.
type Hit struct {
	Tensor     *Tensor // nil for non-tensor bytes
	Region     string  // "" for a tensor; [RegionHeader], [RegionPadding] or [RegionTrailing] otherwise
	Start, End int64   // byte range inside the tensor (relative to the tensor's start) or, for a region, absolute file offsets; End exclusive
}

// String renders the hit for an error message, with an inclusive byte range:
//
//	model.layers.0.attn.q_proj.weight (BF16 [4096 4096], bytes 0-65535)
//	header (bytes 0-1063)
//
// Names and dtypes come from untrusted files: one that is empty, or holds a
// character that is not printable or a double quote, is written quoted as
// by [strconv.Quote], so the result never holds control characters.
func (h Hit) String() string {
	var b strings.Builder
	if h.Tensor == nil {
		b.WriteString(printable(h.Region))
		b.WriteString(" (bytes ")
	} else {
		t := h.Tensor
		b.WriteString(printable(t.Name))
		b.WriteString(" (")
		b.WriteString(printable(t.DType))
		b.WriteString(" [")
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteString("], bytes ")
	}
	b.WriteString(strconv.FormatInt(h.Start, 10))
	b.WriteByte('-')
	b.WriteString(strconv.FormatInt(h.End-1, 10))
	b.WriteByte(')')
	return b.String()
}

// printable returns s as it is when every character is printable and not a
// double quote, and quoted otherwise.
func printable(s string) string {
	if s == "" || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool {
		return r == '"' || !strconv.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

// Lookup returns what the byte range [off, off+n) of the file touches, in
// file order: each tensor it overlaps (with the byte range inside the
// tensor) and the non-tensor regions (header, padding, trailing bytes), at
// most max entries (max <= 0 means no bound), plus the count of entries left
// out. Tensors of length zero touch no bytes and are never returned. The
// range is clipped to [0, m.Size); an empty range touches nothing.
//
// It runs in O(log t + k) for t tensors and k entries in the range.
func (m *Map) Lookup(off, n int64, max int) (hits []Hit, more int) {
	if n <= 0 {
		return nil, 0
	}
	hi := m.Size
	if off <= m.Size-n { // off+n neither overflows nor passes the end
		hi = off + n
	}
	lo := clamp(off, 0, m.Size)
	hi = clamp(hi, 0, m.Size)
	if lo >= hi {
		return nil, 0
	}
	add := func(h Hit) {
		if max > 0 && len(hits) >= max {
			more++
			return
		}
		hits = append(hits, h)
	}
	headerEnd := clamp(m.DataStart, 0, m.Size)
	pos := lo
	if pos < headerEnd {
		e := min(hi, headerEnd)
		add(Hit{Region: RegionHeader, Start: pos, End: e})
		pos = e
	}
	ts := m.Tensors
	// Under the Map's invariants, End() does not decrease along ts.
	i := sort.Search(len(ts), func(i int) bool { return ts[i].End() > pos })
	for ; i < len(ts) && pos < hi; i++ {
		t := &ts[i]
		if t.Offset >= hi {
			break
		}
		if t.Length <= 0 {
			continue
		}
		if t.Offset > pos {
			add(Hit{Region: RegionPadding, Start: pos, End: t.Offset})
			pos = t.Offset
		}
		e := min(hi, t.End())
		add(Hit{Tensor: t, Start: pos - t.Offset, End: e - t.Offset})
		pos = e
	}
	if pos < hi {
		if pos < m.lastEnd() {
			add(Hit{Region: RegionPadding, Start: pos, End: hi})
		} else {
			add(Hit{Region: RegionTrailing, Start: pos, End: hi})
		}
	}
	return hits, more
}

// lastEnd returns the end of the last tensor of nonzero length, or
// DataStart when there is none.
func (m *Map) lastEnd() int64 {
	if m.dataEnd != 0 {
		return m.dataEnd
	}
	for i := len(m.Tensors) - 1; i >= 0; i-- {
		if t := &m.Tensors[i]; t.Length > 0 {
			return max(t.End(), m.DataStart)
		}
	}
	return m.DataStart
}

func clamp(v, lo, hi int64) int64 {
	return max(lo, min(v, hi))
}
