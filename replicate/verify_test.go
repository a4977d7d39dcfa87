package replicate

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vramseal/vramseal/audit"
)

// closedLog makes a log of n records on node, closes it and returns its
// directory, record lines and checkpoint notes.
func closedLog(t *testing.T, node string, n int) (string, *audit.PublicKey, [][]byte, [][]byte) {
	t.Helper()
	l := newLog(t, node)
	appendN(t, l, 0, n)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines, notes := readLog(t, l.Dir())
	return l.Dir(), l.PublicKey(), lines, notes
}

// readAnchors returns the epoch anchor lines of the log in dir.
func readAnchors(t *testing.T, dir string) (anchors [][]byte) {
	t.Helper()
	if err := audit.NewAnchorReader(dir, 0, audit.ReadOptions{}).Read(context.Background(), func(_ uint64, b []byte) error {
		anchors = append(anchors, bytes.Clone(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return anchors
}

func readLog(t *testing.T, dir string) (lines, notes [][]byte) {
	t.Helper()
	if _, err := audit.NewRecordReader(dir, 1, audit.ReadOptions{}).Read(context.Background(), 0, 0, func(_ uint64, b []byte) error {
		lines = append(lines, bytes.Clone(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := audit.ReadCheckpoints(context.Background(), dir, 0, audit.ReadOptions{}, func(c *audit.Checkpoint) error {
		notes = append(notes, c.Note)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return lines, notes
}

// publish writes records and checkpoints to a new stream as given, with no
// checks: what a hostile or broken writer could leave there.
func publish(t *testing.T, url, stream, logID, node string, anchors, lines, notes [][]byte) {
	t.Helper()
	nc, js := connectJS(t, url)
	ctx := context.Background()
	if _, err := ensureStream(ctx, js, nc, stream, 1, 0); err != nil {
		t.Fatal(err)
	}
	for _, b := range anchors {
		if _, err := js.Publish(ctx, EpochsSubject(logID, node), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range lines {
		if _, err := js.Publish(ctx, RecordsSubject(logID, node), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range notes {
		if _, err := js.Publish(ctx, CheckpointsSubject(logID, node), b); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyHostileStream puts corrupt or hostile contents in the stream:
// the verifier names the node, the kind of problem and where it is.
func TestVerifyHostileStream(t *testing.T) {
	dir, pk, lines, notes := closedLog(t, "n1", 40)
	anchors := readAnchors(t, dir)
	_, _, otherLines, otherNotes := closedLog(t, "n1", 10)
	logID := pk.LogID()
	with := func(l [][]byte, i int, b []byte) [][]byte {
		out := append([][]byte(nil), l...)
		out[i] = b
		return out
	}
	join := func(ls ...[]byte) []byte { return bytes.Join(ls, []byte("\n")) }
	packed := [][]byte{join(lines[:10]...), join(lines[10:25]...), join(lines[25:]...)}
	forged := bytes.Clone(notes[len(notes)-1])
	forged = bytes.Replace(forged, []byte("\n40\n"), []byte("\n39\n"), 1)
	tests := []struct {
		name                  string
		node                  string
		anchors, lines, notes [][]byte
		kind                  Kind
		seq                   uint64
	}{
		{"anchors missing", "n1", nil, lines, notes, ChainBroken, 1},
		{"anchor repeated", "n1", append([][]byte{anchors[0]}, anchors...), lines, notes, Duplicate, 0},
		{"wrong node", "n2", anchors, lines, nil, WrongNode, 1},
		{"gap", "n1", anchors, append(append([][]byte(nil), lines[:9]...), lines[10:]...), nil, Gap, 10},
		{"duplicate", "n1", anchors, append(append(append([][]byte(nil), lines[:10]...), lines[9]), lines[10:]...), nil, Duplicate, 10},
		{"not a record", "n1", anchors, with(lines, 3, []byte("{\"v\":1,\"seq\":4}")), nil, Malformed, 0},
		{"record of another log", "n1", anchors, with(lines, 0, otherLines[0]), nil, WrongNode, 1},
		{"forged checkpoint", "n1", anchors, lines, [][]byte{notes[0], forged}, BadCheckpoint, 0},
		{"checkpoint of another key", "n1", anchors, lines, [][]byte{otherNotes[0]}, BadCheckpoint, 0},
		{"duplicate checkpoint", "n1", anchors, lines, [][]byte{notes[0], notes[0]}, Duplicate, 0},
		{"checkpoint beyond the records", "n1", anchors, lines[:20], notes, "", 0},
		{"record altered", "n1", anchors, with(lines, 5, bytes.Replace(lines[5], []byte(`"n":5`), []byte(`"n":6`), 1)), notes, "", 0},
		// Messages of several records.
		{"packed, a gap between", "n1", anchors, [][]byte{packed[0], join(lines[11:]...)}, nil, Gap, 11},
		{"packed, a gap inside", "n1", anchors, [][]byte{join(append(slices.Clone(lines[:6]), lines[7:30]...)...)}, nil, Gap, 7},
		{"packed, a duplicate inside", "n1", anchors, [][]byte{join(append(slices.Clone(lines[:5]), lines[4:]...)...)}, nil, Duplicate, 5},
		{"packed, ending with a newline", "n1", anchors, [][]byte{append(join(lines...), '\n')}, nil, Malformed, 1},
		{"packed, an empty line", "n1", anchors, [][]byte{join(lines[0], nil, lines[1])}, nil, Malformed, 2},
		{"packed, another node's record inside", "n1", anchors, with(packed, 1, join(lines[10], otherLines[1])), nil, WrongNode, 2},
		{"empty message", "n1", anchors, [][]byte{packed[0], {}}, nil, Malformed, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := runServer(t, t.TempDir(), 0, nil, nil, "s1") // streams' subjects may not overlap
			stream := "HOSTILE"
			publish(t, srv.ClientURL(), stream, logID, tt.node, tt.anchors, tt.lines, tt.notes)
			reps, err := Verify(context.Background(), VerifyOptions{ConnOptions: ConnOptions{URLs: []string{srv.ClientURL()}, Stream: stream},
				PublicKeys: []*audit.PublicKey{pk}})
			if err != nil {
				t.Fatalf("Verify = %v", err)
			}
			if len(reps) != 1 || reps[0].Err == nil {
				t.Fatalf("Verify = %+v, want one node that fails", reps)
			}
			var se *StreamError
			if !errors.As(reps[0].Err, &se) {
				t.Fatalf("Verify: %v, want a *StreamError", reps[0].Err)
			}
			if se.Node != tt.node || se.LogID != logID {
				t.Errorf("Verify names node %s of log %s, want %s of %s", se.Node, se.LogID, tt.node, logID)
			}
			if tt.kind != "" && se.Kind != tt.kind || tt.seq != 0 && se.Seq != tt.seq {
				t.Errorf("Verify: %v; want kind %q at seq %d", se, tt.kind, tt.seq)
			}
			t.Log(se)
			if strings.ContainsAny(se.Error(), "\x1b\r") {
				t.Errorf("the error holds control characters: %q", se.Error())
			}
		})
	}
}

// TestVerifyPacked: a stream of messages of several records verifies; a
// message whose ID does not name its records does not.
func TestVerifyPacked(t *testing.T) {
	dir, pk, lines, notes := closedLog(t, "n1", 40)
	anchors := readAnchors(t, dir)
	logID := pk.LogID()
	join := func(ls [][]byte) []byte { return bytes.Join(ls, []byte("\n")) }
	srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
	publish(t, urlOf(srv), DefaultStream, logID, "n1", anchors, [][]byte{join(lines[:1]), join(lines[1:17]), join(lines[17:])}, notes)
	vo := VerifyOptions{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, PublicKeys: []*audit.PublicKey{pk}, Local: dir}
	if reps := verifyOK(t, vo); len(reps) != 1 || reps[0].Records != uint64(len(lines)) {
		t.Fatalf("Verify = %+v, want %d records", reps, len(lines))
	}

	for _, tc := range []struct {
		id    string
		valid bool
	}{{recordsMsgID(logID, 1, 40), true}, {recordsMsgID(logID, 1, 39), false}, {logID + "-1", false}, {"0123456789abcdef-1-40", false}} {
		srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
		publish(t, urlOf(srv), DefaultStream, logID, "n1", anchors, nil, nil)
		nc, _ := connectJS(t, urlOf(srv))
		m := nats.NewMsg(RecordsSubject(logID, "n1"))
		m.Data = join(lines)
		m.Header.Set(jetstream.MsgIDHeader, tc.id)
		if _, err := nc.RequestMsg(m, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		reps, err := Verify(context.Background(), VerifyOptions{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, PublicKeys: []*audit.PublicKey{pk}})
		if err != nil || len(reps) != 1 {
			t.Fatalf("Verify = %+v, %v", reps, err)
		}
		var se *StreamError
		switch {
		case tc.valid && reps[0].Err != nil:
			t.Errorf("message id %q: %v", tc.id, reps[0].Err)
		case !tc.valid && (!errors.As(reps[0].Err, &se) || se.Kind != Malformed || se.Seq != 1):
			t.Errorf("message id %q: Verify = %v, want a malformed message at seq 1", tc.id, reps[0].Err)
		}
	}
}

// TestVerifyLocal compares the stream with local logs that were rolled
// back, forked or rewritten.
func TestVerifyLocal(t *testing.T) {
	srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
	ctx := context.Background()
	o := audit.Options{Node: "n1"}
	l := newLog(t, "n1")
	appendN(t, l, 0, 50)
	dir := l.Dir()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	snap := t.TempDir() + "/snap"
	if err := os.CopyFS(snap, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(snap, 0o700); err != nil {
		t.Fatal(err)
	}
	snapLast := uint64(len(mustLines(t, snap)))
	l2, err := audit.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l2, 50, 30)
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	lines, notes := readLog(t, dir)
	publish(t, srv.ClientURL(), DefaultStream, l.PublicKey().LogID(), "n1", readAnchors(t, dir), lines, notes)
	vo := VerifyOptions{ConnOptions: ConnOptions{URLs: []string{srv.ClientURL()}}, PublicKeys: []*audit.PublicKey{l.PublicKey()}}

	vo.Local = dir
	verifyOK(t, vo)

	check := func(what string, kind Kind, seq uint64) {
		t.Helper()
		vo.Local = snap
		reps, err := Verify(ctx, vo)
		if err != nil {
			t.Fatal(err)
		}
		var se *StreamError
		if len(reps) != 1 || !errors.As(reps[0].Err, &se) || se.Kind != kind || se.Seq != seq {
			t.Fatalf("%s: Verify = %+v; want %q at seq %d", what, reps, kind, seq)
		}
	}
	check("rolled back", LocalTruncated, snapLast+1)

	ls, err := audit.Open(snap, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Append(ctx, audit.Event{Type: "forged_history", Severity: audit.SeverityCritical}); err != nil {
		t.Fatal(err)
	}
	ls.Close(ctx)
	check("forked", LocalDiverged, snapLast+1)
}

func mustLines(t *testing.T, dir string) [][]byte {
	lines, _ := readLog(t, dir)
	return lines
}
