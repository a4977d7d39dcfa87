package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// goldenLines returns the record lines of the golden segment, for seeds.
func goldenLines(f *testing.F) [][]byte {
	ents, _ := filepath.Glob(filepath.Join("testdata", "v1", "*.ndjson"))
	var out [][]byte
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, splitLines(b)...)
	}
	return out
}

func FuzzParseRecord(f *testing.F) {
	for _, l := range goldenLines(f) {
		f.Add(l)
	}
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":2,"seq":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		var v recordView
		if err := parseRecord(line, &v); err != nil {
			return
		}
		// Canonical: encoding the decoded record gives the same bytes.
		var r Record
		v.record(&r)
		e := Event{Type: r.Type, Severity: r.Severity, CorrelationID: r.CorrelationID, Fields: r.Fields}
		body := appendBody(nil, &e, appendFixed(nil, r.Service, r.Node, r.Worker))
		var k [32]byte
		s := sealer{logID: string(v.idLogID), epoch: r.Epoch, mac: newMAC(&k)}
		got := s.appendLine(nil, r.Seq, r.Time, body, &r.Prev)
		if want := v.macInput(); !bytes.HasPrefix(got, want) || got[len(want)] != ',' {
			t.Fatalf("re-encoding differs:\n got %q\nwant %q", got, want)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "v1", manifestName)); err == nil {
		f.Add(b)
	}
	m := &manifest{LogID: "0123456789abcdef", Segments: []segmentInfo{{
		Name: segmentName(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), 1), FirstSeq: 1, LastSeq: 0,
	}}}
	f.Add(m.encode())
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			return
		}
		m2, err := parseManifest(m.encode())
		if err != nil {
			t.Fatalf("re-parse of an encoded manifest: %v", err)
		}
		if !bytes.Equal(m.encode(), m2.encode()) {
			t.Fatal("manifest encoding is not stable")
		}
	})
}

func FuzzParseVerificationKey(f *testing.F) {
	f.Add([]byte(keyFileHeader + "0123456789abcdef " + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseVerificationKey(b)
		if err != nil {
			return
		}
		if k2, err := ParseVerificationKey(k.Encode()); err != nil || k2.key != k.key || k2.logID != k.logID {
			t.Fatalf("round trip: %v", err)
		}
	})
}
