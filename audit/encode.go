package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
	"time"
	"unicode/utf8"
)

// Format versions. New logs are written in formatVersion; a log keeps the
// version it was created with (its manifest, state and records agree).
const (
	formatV1      = 1 // epochs not bound to time or position
	formatVersion = 2 // epochs anchored in the epochs file
)

// timeLayout is the only accepted time form: UTC, nanoseconds, fixed width.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// macSuffixLen is the length of `,"mac":"<64 hex>"}`, the part of a record
// line (without its newline) that the MAC does not cover.
const macSuffixLen = len(`,"mac":""}`) + 64

// genesis is the prev value of the first record of every log:
// SHA-256("vramseal audit genesis v1").
var genesis = sha256.Sum256([]byte("vramseal audit genesis v1"))

const hexdigits = "0123456789abcdef"

func hexString(b []byte) string { return hex.EncodeToString(b) }

func appendHex(dst []byte, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexdigits[c>>4], hexdigits[c&0xf])
	}
	return dst
}

// mustEscape reports whether the code point r is written as a \u escape.
// The set is part of the canonical form (see the package documentation): C0
// controls, DEL, C1 controls, the line and paragraph separators, the byte
// order mark and every bidirectional formatting character, so that neither
// a JSON parser nor a terminal showing the raw file can be misled.
func mustEscape(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r == 0x2028, r == 0x2029,
		r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0xfeff:
		return true
	}
	return false
}

// appendString appends s as a canonical JSON string. s must be valid UTF-8.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"':
				dst = append(dst, '\\', '"')
			case '\\':
				dst = append(dst, '\\', '\\')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if mustEscape(r) {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', hexdigits[r>>12&0xf], hexdigits[r>>8&0xf], hexdigits[r>>4&0xf], hexdigits[r&0xf])
			start = i + size
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendBody appends the members of a record that come from the event:
// `,"type":...,"sev":...` then `,"cid":...,"fields":{...}`, with the log's
// fixed members (service, node, worker) between them.
func appendBody(dst []byte, e *Event, fixed []byte) []byte {
	dst = append(dst, `,"type":"`...)
	dst = append(dst, e.Type...) // validName: no escaping needed
	dst = append(dst, `","sev":"`...)
	dst = append(dst, severityNames[e.Severity]...)
	dst = append(dst, '"')
	dst = append(dst, fixed...)
	dst = append(dst, `,"cid":`...)
	dst = appendString(dst, e.CorrelationID)
	dst = append(dst, `,"fields":{`...)
	for i := range e.Fields {
		f := &e.Fields[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, f.Key...)
		dst = append(dst, '"', ':')
		switch f.kind {
		case KindString:
			dst = appendString(dst, f.str)
		case KindInt:
			dst = strconv.AppendInt(dst, f.num, 10)
		case KindBool:
			dst = strconv.AppendBool(dst, f.num != 0)
		case KindBytes:
			dst = append(dst, `{"bytes":`...)
			dst = strconv.AppendInt(dst, f.num, 10)
			dst = append(dst, '}')
		case KindDigest:
			dst = append(dst, `{"sha256":"`...)
			dst = appendHex(dst, f.dig[:])
			dst = append(dst, '"', '}')
		}
	}
	return append(dst, '}')
}

// appendFixed returns the service, node and worker members.
func appendFixed(dst []byte, service, node, worker string) []byte {
	dst = append(dst, `,"service":`...)
	dst = appendString(dst, service)
	dst = append(dst, `,"node":`...)
	dst = appendString(dst, node)
	dst = append(dst, `,"worker":`...)
	return appendString(dst, worker)
}

// sealer completes record lines: it adds the header, the epoch, the chain
// link and the MAC. It is used by one goroutine at a time.
type sealer struct {
	ver   int // format version written into "v"
	logID string
	epoch uint64
	mac   hash.Hash // HMAC-SHA256 keyed with the epoch's MAC key
	sum   [sha256.Size]byte
}

func newMAC(macKey *[32]byte) hash.Hash { return hmac.New(sha256.New, macKey[:]) }

// appendLine appends a complete record line, newline included, and returns
// the record's MAC in s.sum.
func (s *sealer) appendLine(dst []byte, seq uint64, t time.Time, body []byte, prev *[32]byte) []byte {
	start := len(dst)
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(s.ver), 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"time":"`...)
	dst = t.UTC().AppendFormat(dst, timeLayout)
	dst = append(dst, `","id":"`...)
	dst = append(dst, s.logID...)
	dst = append(dst, '-')
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '"')
	dst = append(dst, body...)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, s.epoch, 10)
	dst = append(dst, `,"prev":"`...)
	dst = appendHex(dst, prev[:])
	dst = append(dst, '"')
	s.mac.Reset()
	s.mac.Write(dst[start:])
	s.mac.Sum(s.sum[:0])
	dst = append(dst, `,"mac":"`...)
	dst = appendHex(dst, s.sum[:])
	return append(dst, '"', '}', '\n')
}
