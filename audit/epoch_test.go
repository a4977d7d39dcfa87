package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func isProblem(err error, p Problem) bool {
	var ve *VerifyError
	return errors.As(err, &ve) && ve.Problem == p
}

// reseal rewrites a record line with a new epoch and prev and MACs it with
// k, as someone holding k could. It returns the line and its MAC.
func reseal(line []byte, epoch uint64, prev [32]byte, k epochKey) ([]byte, [32]byte) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	var v recordView
	if err := parseRecord(line, &v); err != nil {
		panic(err)
	}
	body := v.macInput()
	i := bytes.LastIndex(body, []byte(`,"epoch":`))
	nb := append([]byte(nil), body[:i]...)
	nb = append(nb, `,"epoch":`...)
	nb = strconv.AppendUint(nb, epoch, 10)
	nb = append(nb, `,"prev":"`...)
	nb = appendHex(nb, prev[:])
	nb = append(nb, '"')
	mk := k.macKey()
	m := hmac.New(sha256.New, mk[:])
	m.Write(nb)
	var sum [32]byte
	m.Sum(sum[:0])
	nb = append(nb, `,"mac":"`...)
	nb = appendHex(nb, sum[:])
	return append(nb, "\"}\n"...), sum
}

// rewriteLog rewrites every record of dir from seq 1, giving each the
// epoch relabel returns and MACing it with that epoch's key derived
// forward from st (the stolen state); then it fixes the manifest, the
// checksum files and the checkpoints, as a thief with the machine could.
func rewriteLog(t *testing.T, dir string, st *state, relabel func(orig uint64) uint64) {
	t.Helper()
	m := loadTestManifest(t, dir)
	prev := genesis
	for i := range m.Segments {
		s := &m.Segments[i]
		path := filepath.Join(dir, s.Name)
		var out []byte
		for j, line := range splitLines(must(os.ReadFile(path))) {
			var v recordView
			if err := parseRecord(bytes.TrimSuffix(line, []byte("\n")), &v); err != nil {
				t.Fatal(err)
			}
			e := relabel(v.epoch)
			nl, mac := reseal(line, e, prev, keyAt(st.key, st.epoch, e))
			out = append(out, nl...)
			prev = mac
			if j == 0 {
				s.FirstMAC, s.FirstEpoch = mac, e
			}
			s.LastMAC, s.LastEpoch = mac, e
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		s.Size = int64(len(out))
		if s.Closed {
			s.SHA256 = sha256.Sum256(out)
			os.WriteFile(path+checksumSuffix, checksumLine(s.SHA256, s.Name), 0o600)
		}
		os.Remove(path + checkpointsSuffix)
	}
	os.WriteFile(filepath.Join(dir, manifestName), m.encode(), 0o600)
	os.Remove(filepath.Join(dir, treeName))
}

// wantFirstBad requires Verify with vk to fail naming seq with one of the
// problems.
func wantFirstBad(t *testing.T, dir string, vk *VerificationKey, seq uint64, want ...Problem) {
	t.Helper()
	ve := wantProblem(t, dir, vk, want...)
	if ve.Seq != seq {
		t.Errorf("Verify = %v, want it to name seq %d", ve, seq)
	}
}

func TestForwardSecurityAttacks(t *testing.T) {
	f := buildTamperFixture(t)
	st := currentKey(t, f.dir) // the state a thief copies at epoch e
	if st.epoch < 3 {
		t.Fatalf("fixture ends at epoch %d, want >= 3", st.epoch)
	}
	anchors := must(os.ReadFile(filepath.Join(f.dir, epochsName)))
	for _, tt := range []struct {
		name    string
		relabel func(uint64) uint64
		epochs  func(t *testing.T, dir string)
		want    []Problem
	}{
		{"relabel old records with later epochs", func(e uint64) uint64 { return st.epoch + e - 1 }, nil, []Problem{WrongEpoch}},
		{"relabel everything as the current epoch", func(uint64) uint64 { return st.epoch }, nil, []Problem{WrongEpoch}},
		{"relabel and anchor the later epochs anew", func(e uint64) uint64 { return st.epoch + e - 1 }, func(t *testing.T, dir string) {
			// Keep the anchors the thief cannot forge; anchor every later
			// epoch at seq 1 with the stolen key.
			b := anchors
			k := st.key
			for e := st.epoch + 1; e < st.epoch+8; e++ {
				a := newAnchor(&k, f.vk.LogID(), e, 1, time.Unix(0, 0), genesis)
				b = append(b, a.line(f.vk.LogID())...)
				k = k.next()
			}
			os.WriteFile(filepath.Join(dir, epochsName), b, 0o600)
		}, []Problem{WrongEpoch, Modified}},
		{"rewrite with only the current state and new anchors", func(uint64) uint64 { return st.epoch }, func(t *testing.T, dir string) {
			// All the thief has is k_e: every anchor he writes is MACed
			// with it.
			var b []byte
			for e := uint64(1); e <= st.epoch; e++ {
				a := newAnchor(&st.key, f.vk.LogID(), e, 1, time.Unix(0, 0), genesis)
				b = append(b, a.line(f.vk.LogID())...)
			}
			os.WriteFile(filepath.Join(dir, epochsName), b, 0o600)
		}, []Problem{Modified}},
		{"rewrite with only the current state, no anchors", func(uint64) uint64 { return st.epoch }, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, epochsName))
		}, []Problem{WrongEpoch}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, f.dir)
			rewriteLog(t, dir, st, tt.relabel)
			if tt.epochs != nil {
				tt.epochs(t, dir)
			}
			wantFirstBad(t, dir, f.vk, 1, tt.want...)
		})
	}
	// The records after the start of the current epoch are the thief's to
	// rewrite (forward security protects the past), but no record he
	// writes can claim a time before that start.
	t.Run("backdate a record of the current epoch", func(t *testing.T) {
		dir := copyDir(t, f.dir)
		live := filepath.Join(dir, f.segs[len(f.segs)-1])
		lines := splitLines(must(os.ReadFile(live)))
		var v recordView
		parseRecord(bytes.TrimSuffix(lines[0], []byte("\n")), &v)
		old := string(v.time)
		early := []byte(strings.Replace(string(lines[0]), old, "2000-01-01T00:00:00.000000000Z", 1))
		forged, _ := reseal(early, st.epoch, v.prev, st.key)
		lines[0] = forged
		os.WriteFile(live, bytes.Join(lines, nil), 0o600)
		ve := wantProblem(t, dir, f.vk, WrongEpoch, Modified)
		if ve.Seq != v.seq {
			t.Errorf("Verify = %v, want it to name seq %d", ve, v.seq)
		}
	})
}

func TestRotationWithoutNewEpoch(t *testing.T) {
	f := buildTamperFixture(t)
	dir := copyDir(t, f.dir)
	m := loadTestManifest(t, dir)
	s := m.Segments[0]
	if s.Records < 2 || s.FirstEpoch != s.LastEpoch {
		t.Fatalf("segment 0 = %+v, want >= 2 records of one epoch", s)
	}
	lines := splitLines(must(os.ReadFile(filepath.Join(dir, s.Name))))
	a, b := bytes.Join(lines[:1], nil), bytes.Join(lines[1:], nil)
	var second recordView
	parseRecord(bytes.TrimSuffix(lines[1], []byte("\n")), &second)
	var first recordView
	parseRecord(bytes.TrimSuffix(lines[0], []byte("\n")), &first)
	s1, s2 := s, s
	s1.LastSeq, s1.Records, s1.Size, s1.LastMAC, s1.SHA256 = 1, 1, int64(len(a)), first.mac, sha256.Sum256(a)
	s1.LastTime = s1.FirstTime
	s2.Name = segmentName(s.FirstTime, 2)
	s2.FirstSeq, s2.Records, s2.Size, s2.FirstMAC, s2.SHA256 = 2, s.Records-1, int64(len(b)), second.mac, sha256.Sum256(b)
	s2.FirstTime, _ = time.Parse(timeLayout, string(second.time))
	os.Remove(filepath.Join(dir, s.Name))
	os.Remove(filepath.Join(dir, s.Name+checksumSuffix))
	for _, x := range []struct {
		s segmentInfo
		b []byte
	}{{s1, a}, {s2, b}} {
		os.WriteFile(filepath.Join(dir, x.s.Name), x.b, 0o600)
		os.WriteFile(filepath.Join(dir, x.s.Name+checksumSuffix), checksumLine(x.s.SHA256, x.s.Name), 0o600)
	}
	m.Segments = append([]segmentInfo{s1, s2}, m.Segments[1:]...)
	os.WriteFile(filepath.Join(dir, manifestName), m.encode(), 0o600)
	for _, key := range []*VerificationKey{f.vk, nil} {
		wantFirstBad(t, dir, key, 2, WrongEpoch)
	}
}

// TestRotationTriggers: a segment rotates when the next record would grow
// it past SegmentMaxBytes, at the first record of a new UTC day, and at
// Open when the live segment holds records; every rotation starts a new
// epoch whose anchor is the new segment's first seq. The epoch interval
// evolves the key without rotating.
func TestRotationTriggers(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)}
	o := Options{Clock: clk.Now, SegmentMaxBytes: 2000, EpochInterval: time.Hour}
	dir, vk, l := newLog(t, o)
	for i := range 8 {
		mustAppend(t, l, testEvent(i))
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	segs := len(loadTestManifest(t, dir).Segments)
	if segs < 2 {
		t.Fatalf("8 records in 2000-byte segments made %d segment(s)", segs)
	}
	clk.Advance(30 * time.Minute) // 23:30: same day, same epoch
	mustAppend(t, l, testEvent(8))
	clk.Advance(45 * time.Minute) // 00:15 the next day
	mustAppend(t, l, testEvent(9))
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := loadTestManifest(t, dir)
	if len(m.Segments) != segs+1 || !strings.Contains(m.Segments[len(m.Segments)-1].Name, "20260302") {
		t.Errorf("after midnight: segments %d (want %d), last %s", len(m.Segments), segs+1, m.Segments[len(m.Segments)-1].Name)
	}
	clk.Advance(90 * time.Minute) // the epoch interval, no rotation
	mustAppend(t, l, Event{Type: "x", Severity: SeverityCritical})
	if n := len(loadTestManifest(t, dir).Segments); n != segs+1 {
		t.Errorf("the epoch interval rotated: %d segments, want %d", n, segs+1)
	}
	mustClose(t, l)
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	m = loadTestManifest(t, dir)
	if len(m.Segments) != segs+2 {
		t.Errorf("Open: %d segments, want %d", len(m.Segments), segs+2)
	}
	starts := map[uint64]bool{}
	r, err := openAnchors(OSFS{}, dir, vk.LogID())
	if err != nil {
		t.Fatal(err)
	}
	for a, err := r.next(); err == nil; a, err = r.next() {
		starts[a.seq] = true
	}
	r.close()
	for _, s := range m.Segments {
		if !starts[s.FirstSeq] {
			t.Errorf("segment %s does not start an epoch", s.Name)
		}
	}
	rep := mustVerify(t, dir, vk)
	if rep.Anchors != len(m.Segments)+1 {
		t.Errorf("Verify = %+v, want %d anchors (one per segment, one for the interval)", rep, len(m.Segments)+1)
	}
}

func TestInitLeavesNoVerificationKey(t *testing.T) {
	dir := t.TempDir() + "/log"
	vk, err := Init(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := currentKey(t, dir)
	k1 := vk.key.next()
	if st.epoch != 1 || st.key != k1 {
		t.Errorf("state after Init is at epoch %d, want epoch 1 holding k_1", st.epoch)
	}
	hexKey := hexString(vk.key[:])
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b := must(os.ReadFile(path))
		if bytes.Contains(b, vk.key[:]) || bytes.Contains(b, []byte(hexKey)) {
			t.Errorf("%s holds the verification key", d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := mustAppend(t, l, Event{Type: "x", Severity: SeverityCritical})
	mustClose(t, l)
	if rep := mustVerify(t, dir, vk); rep.FirstEpoch != 1 || r.Seq != 1 {
		t.Errorf("Verify = %+v, want the first record in epoch 1", rep)
	}
}

// TestRolledBackState: a state file copied earlier and put back is refused,
// also when the live segment is empty.
func TestRolledBackState(t *testing.T) {
	clk := newFakeClock()
	o := Options{Clock: clk.Now}
	dir, _, l := newLog(t, o)
	mustAppend(t, l, testEvent(0))
	mustClose(t, l)
	old := must(os.ReadFile(filepath.Join(dir, stateName)))
	l, err := Open(dir, o) // closes the segment: epoch 2, an empty live segment
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if err := l.Flush(context.Background()); err != nil { // the interval: epoch 3
		t.Fatal(err)
	}
	mustClose(t, l)
	if m := loadTestManifest(t, dir); m.Segments[len(m.Segments)-1].Records != 0 {
		t.Fatalf("live segment holds %d records, want none", m.Segments[len(m.Segments)-1].Records)
	}
	os.WriteFile(filepath.Join(dir, stateName), old, 0o600)
	_, err = Open(dir, o)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.File != stateName || ce.Problem != WrongEpoch {
		t.Errorf("Open(rolled-back state) = %v, want WrongEpoch at %s", err, stateName)
	}
}

// TestRolledBackStateV1 is the same for a version 1 log, which has no
// anchors: the empty live segment's epoch gives the rollback away.
func TestRolledBackStateV1(t *testing.T) {
	vk, err := ParseVerificationKey(must(os.ReadFile(filepath.Join(goldenDir, "verification.key"))))
	if err != nil {
		t.Fatal(err)
	}
	dir := copyDir(t, goldenDir)
	m := loadTestManifest(t, dir)
	last := m.Segments[len(m.Segments)-1]
	st := &state{ver: 1, logID: vk.LogID(), epoch: last.LastEpoch, started: last.LastTime, key: keyAt(vk.key, 0, last.LastEpoch)}
	os.WriteFile(filepath.Join(dir, stateName), st.encode(), 0o600)
	l, err := Open(dir, Options{}) // closes the live segment, evolves, starts an empty one
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	os.WriteFile(filepath.Join(dir, stateName), st.encode(), 0o600)
	_, err = Open(dir, Options{})
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.File != stateName || ce.Problem != WrongEpoch {
		t.Errorf("Open(rolled-back v1 state, empty live segment) = %v, want WrongEpoch at %s", err, stateName)
	}
}

func TestOpenNamesMissingState(t *testing.T) {
	dir, _, l := newLog(t, Options{})
	mustClose(t, l)
	os.Remove(filepath.Join(dir, stateName))
	_, err := Open(dir, Options{})
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.File != stateName || !strings.Contains(err.Error(), stateName) {
		t.Errorf("Open(no state.json) = %v, want a CorruptionError naming %s", err, stateName)
	}
	empty := t.TempDir()
	if _, err := Open(empty, Options{}); !errors.Is(err, ErrNotInitialized) || !strings.Contains(err.Error(), stateName) {
		t.Errorf("Open(empty dir) = %v, want ErrNotInitialized naming %s", err, stateName)
	}
}

// TestVerifyIgnoresState: Verify never reads state.json (the writer's
// secret, absent from an auditor's copy).
func TestVerifyIgnoresState(t *testing.T) {
	dir, vk, l := newLog(t, Options{})
	mustAppend(t, l, testEvent(0))
	mustClose(t, l)
	for _, content := range [][]byte{nil, []byte("garbage")} {
		os.Remove(filepath.Join(dir, stateName))
		if content != nil {
			os.WriteFile(filepath.Join(dir, stateName), content, 0o600)
		}
		mustVerify(t, dir, vk)
	}
}

// TestEmptyLogForms: a log with no segment (just made by Init) and one
// whose only segment is open and empty (its file possibly not created
// yet) both verify, with no records.
func TestEmptyLogForms(t *testing.T) {
	dir := t.TempDir() + "/log"
	vk, err := Init(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, vk); rep.Records != 0 || rep.Segments != 0 || rep.Anchors != 1 {
		t.Errorf("Verify(after Init) = %+v, want no records, no segment, one anchor", rep)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	m := loadTestManifest(t, dir)
	if len(m.Segments) != 1 || m.Segments[0].Closed || m.Segments[0].Records != 0 {
		t.Fatalf("manifest after Open+Close = %+v, want one open empty segment", m.Segments)
	}
	if rep := mustVerify(t, dir, vk); rep.Records != 0 {
		t.Errorf("Verify(empty open segment) = %+v, want no records", rep)
	}
	os.Remove(filepath.Join(dir, m.Segments[0].Name))
	if rep := mustVerify(t, dir, vk); rep.Records != 0 {
		t.Errorf("Verify(empty open segment, no file) = %+v, want no records", rep)
	}
}

func TestManifestMembers(t *testing.T) {
	dir, vk, l := newLog(t, Options{})
	mustAppend(t, l, testEvent(0))
	mustClose(t, l)
	good := string(must(os.ReadFile(filepath.Join(dir, manifestName))))
	m := loadTestManifest(t, dir)
	for _, tt := range []struct{ name, old, new string }{
		{"duplicate log_id", `"log_id": "` + m.LogID + `",`, `"log_id": "` + m.LogID + `", "log_id": "0000000000000000",`},
		{"duplicate segment member", `"records": 1,`, `"records": 1, "records": 1,`},
		{"missing pruned", `"pruned": [],`, ``},
		{"missing segment sha256", `"sha256": ""`, `"records": 1`},
		{"last_seq above 2^63-1", `"last_seq": 1,`, `"last_seq": 9223372036854775808,`},
		{"bad day in a name", `audit-2026`, `audit-2026`}, // replaced below
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(good, tt.old) {
				t.Fatalf("manifest lacks %q:\n%s", tt.old, good)
			}
			bad := strings.Replace(good, tt.old, tt.new, 1)
			if tt.name == "bad day in a name" {
				name := m.Segments[0].Name
				bad = strings.ReplaceAll(good, name, name[:10]+"1399"+name[14:])
			}
			if _, err := parseManifest([]byte(bad)); err == nil {
				t.Fatalf("parseManifest(%s) = nil, want error", tt.name)
			}
			d := copyDir(t, dir)
			os.WriteFile(filepath.Join(d, manifestName), []byte(bad), 0o600)
			if _, err := Verify(context.Background(), d, VerifyOptions{Key: vk}); !isProblem(err, ManifestMismatch) {
				t.Errorf("Verify = %v, want ManifestMismatch", err)
			}
			var ce *CorruptionError
			if _, err := Open(d, Options{}); !errors.As(err, &ce) {
				t.Errorf("Open = %v, want a CorruptionError", err)
			}
		})
	}
}

// TestSegmentDayIsInformational: the day in a segment's name is when the
// segment was started; Verify checks that it is a date, not that it
// matches the records' times.
func TestSegmentDayIsInformational(t *testing.T) {
	dir, vk, l := newLog(t, Options{})
	mustAppend(t, l, testEvent(0))
	mustClose(t, l)
	l, err := Open(dir, Options{}) // closes the first segment
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	m := loadTestManifest(t, dir)
	s := &m.Segments[0]
	renamed := segmentName(time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC), s.FirstSeq)
	for _, suf := range []string{"", checkpointsSuffix} {
		if err := os.Rename(filepath.Join(dir, s.Name+suf), filepath.Join(dir, renamed+suf)); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, s.Name+checksumSuffix))
	os.WriteFile(filepath.Join(dir, renamed+checksumSuffix), checksumLine(s.SHA256, renamed), 0o600)
	s.Name = renamed
	os.WriteFile(filepath.Join(dir, manifestName), m.encode(), 0o600)
	mustVerify(t, dir, vk)
}

func TestPrunedRecordFields(t *testing.T) {
	dir, _, l := newLog(t, Options{})
	defer mustClose(t, l)
	_, err := l.Append(context.Background(), Event{Type: prunedType, Severity: SeverityHigh, Fields: []Field{Int("through_seq", 5)}})
	if !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Append(audit_pruned) = %v, want ErrInvalidEvent", err)
	}
	_ = dir
	good := []Field{String("before", "2026-01-02T03:04:05.000000000Z"), Int("segments", 1), Int("records", 2),
		Int("first_seq", 1), Int("through_seq", 2), Digest("through_mac", [32]byte{1})}
	for _, tt := range []struct {
		name   string
		fields func() []Field
		ok     bool
	}{
		{"as written", func() []Field { return good }, true},
		{"through_seq a string", func() []Field { f := append([]Field(nil), good...); f[4] = String("through_seq", "2"); return f }, false},
		{"through_mac a string", func() []Field { f := append([]Field(nil), good...); f[5] = String("through_mac", "x"); return f }, false},
		{"records as bytes", func() []Field { f := append([]Field(nil), good...); f[2] = Bytes("records", 2); return f }, false},
		{"missing field", func() []Field { return good[:5] }, false},
		{"extra field", func() []Field { return append(append([]Field(nil), good...), Int("x", 1)) }, false},
		{"through before first", func() []Field { f := append([]Field(nil), good...); f[4] = Int("through_seq", 0); return f }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := Event{Type: prunedType, Severity: SeverityHigh, Fields: tt.fields()}
			var k [32]byte
			s := sealer{ver: formatVersion, logID: "0123456789abcdef", mac: newMAC(&k)}
			line := s.appendLine(nil, 3, time.Now(), appendBody(nil, &e, appendFixed(nil, "a", "n", "")), &genesis)
			var v recordView
			if err := parseRecord(bytes.TrimSuffix(line, []byte("\n")), &v); err != nil {
				t.Fatal(err)
			}
			if err := prunedFields(&v); (err == nil) != tt.ok {
				t.Errorf("prunedFields(%s) = %v, want ok %v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestKeyFileNewline(t *testing.T) {
	dir := t.TempDir() + "/log"
	vk, err := Init(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc := vk.Encode()
	for _, tt := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"as written", enc, true},
		{"no final newline", enc[:len(enc)-1], true},
		{"CRLF", append(enc[:len(enc)-1:len(enc)-1], "\r\n"...), false},
		{"two newlines", append(enc[:len(enc):len(enc)], '\n'), false},
		{"version 3", bytes.Replace(enc, []byte(" v2 "), []byte(" v3 "), 1), false},
	} {
		k, err := ParseVerificationKey(tt.b)
		if (err == nil) != tt.ok {
			t.Errorf("ParseVerificationKey(%s) = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err == nil && (k.key != vk.key || k.LogID() != vk.LogID() || k.Version() != 2) {
			t.Errorf("ParseVerificationKey(%s) gave another key", tt.name)
		}
	}
}

// TestTamperEpochsEveryByte changes every byte of the epochs file, one at
// a time, and truncates it at every line: Verify with the key must fail.
func TestTamperEpochsEveryByte(t *testing.T) {
	f := buildTamperFixture(t)
	mfs := loadMemFS(t, f.dir) // as in TestTamperEveryByte
	orig := mfs.files[epochsName]
	verify := func() error {
		_, err := Verify(context.Background(), f.dir, VerifyOptions{Key: f.vk, FS: mfs})
		return err
	}
	for i := range orig {
		if i == len(orig)-1 {
			continue // an unterminated last anchor is an append in progress; Open refuses it (see TestOpenCutsTornAnchor)
		}
		b := bytes.Clone(orig)
		b[i] ^= 0x01
		mfs.files[epochsName] = b
		if err := verify(); err == nil {
			t.Errorf("Verify passes with byte %d of %s changed (%q)", i, epochsName, orig[i])
		}
	}
	lines := splitLines(orig)
	for n := range lines {
		mfs.files[epochsName] = bytes.Join(lines[:n], nil)
		if err := verify(); err == nil {
			t.Errorf("Verify passes with %s cut to %d of %d anchors", epochsName, n, len(lines))
		}
	}
	mfs.files[epochsName] = orig
	if err := verify(); err != nil {
		t.Errorf("Verify of the unedited log in memory = %v", err)
	}
}

// TestOpenCutsTornAnchor: an anchor cut short by a crash (the state never
// moved to its epoch) is cut by Open, which goes on; an anchor missing
// under a state that moved on is refused.
func TestOpenCutsTornAnchor(t *testing.T) {
	dir, vk, l := newLog(t, Options{})
	mustAppend(t, l, testEvent(0))
	mustClose(t, l)
	path := filepath.Join(dir, epochsName)
	good := must(os.ReadFile(path))
	torn := append(bytes.Clone(good), good[:40]...)
	os.WriteFile(path, torn, 0o600)
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open(torn anchor) = %v", err)
	}
	mustAppend(t, l, Event{Type: "x", Severity: SeverityCritical})
	mustClose(t, l)
	mustVerify(t, dir, vk)
	lines := splitLines(must(os.ReadFile(path)))
	os.WriteFile(path, bytes.Join(lines[:len(lines)-1], nil), 0o600)
	var ce *CorruptionError
	if _, err := Open(dir, Options{}); !errors.As(err, &ce) || ce.File != epochsName {
		t.Errorf("Open(last anchor missing) = %v, want a CorruptionError naming %s", err, epochsName)
	}
}
