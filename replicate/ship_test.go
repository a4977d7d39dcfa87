package replicate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vramseal/vramseal/audit"
)

// subjectCount returns the number of messages on subj.
func subjectCount(t testing.TB, url, stream, subj string) uint64 {
	t.Helper()
	_, js := connectJS(t, url)
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

func TestShipSingleServerAndResume(t *testing.T) {
	srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
	l := newLog(t, "gpu-1.example")
	o := Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}}
	s := startShipper(t, l, o)
	appendN(t, l, 0, 2500)
	caughtUp(t, s, l)
	if st := s.Status(); !st.Connected || st.LagRecords != 0 || st.Lag != 0 || st.Subject != RecordsSubject(l.PublicKey().LogID(), "gpu-1.example") {
		t.Fatalf("Status() = %+v, want connected, no lag", st)
	}

	// A second shipper (a restart) goes on from the stream's last record.
	s2 := startShipper(t, l, o)
	appendN(t, l, 2500, 300)
	caughtUp(t, s2, l)
	caughtUp(t, s, l)
	subj := RecordsSubject(l.PublicKey().LogID(), "gpu-1.example")
	if n := subjectCount(t, urlOf(srv), DefaultStream, subj); n == 0 || n >= l.DurableSeq() {
		t.Fatalf("%d records in %d messages, want them packed", l.DurableSeq(), n)
	}
	reps := verifyOK(t, VerifyOptions{ConnOptions: o.ConnOptions, PublicKeys: []*audit.PublicKey{l.PublicKey()}, Local: l.Dir()})
	if len(reps) != 1 || reps[0].Records != l.DurableSeq() || !reps[0].CheckpointsChecked || reps[0].Checkpoints == 0 || !reps[0].Local {
		t.Fatalf("Verify = %+v, want one node with every record and checked checkpoints", reps)
	}

	// The stream was created append-only.
	_, js := connectJS(t, urlOf(srv))
	st, err := js.Stream(context.Background(), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(context.Background()); err == nil {
		t.Fatal("Purge of the audit stream succeeded")
	}
	if err := st.DeleteMsg(context.Background(), 1); err == nil {
		t.Fatal("DeleteMsg on the audit stream succeeded")
	}
	if cfg := st.CachedInfo().Config; cfg.Replicas != 1 || !cfg.DenyDelete || !cfg.DenyPurge || cfg.AllowRollup {
		t.Fatalf("stream config = %+v", cfg)
	}
}

// messageSizes returns the data size of every message on subj.
func messageSizes(t testing.TB, url, stream, subj string) []int {
	t.Helper()
	_, js := connectJS(t, url)
	var sizes []int
	if err := forEach(context.Background(), js, stream, subj, 5*time.Second, func(m jetstream.Msg, _ uint64) error {
		sizes = append(sizes, len(m.Data()))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return sizes
}

// Records are packed into messages as large as the server's max_payload,
// the stream's max_msg_size and MaxMessageBytes allow; a record larger
// than that stops shipping with a clear error and loses nothing.
func TestMessageSize(t *testing.T) {
	for _, tc := range []struct {
		name                        string
		maxPayload, maxMsgSize, opt int
		want                        int // the largest message allowed
	}{
		{"server default", 0, 0, 0, DefaultMessageBytes},
		{"max_payload", 8 << 10, 0, 0, 8<<10 - headerRoom},
		{"max_msg_size", 0, 4 << 10, 0, 4<<10 - headerRoom},
		{"option", 0, 0, 3000, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := runServer(t, t.TempDir(), 0, nil, nil, "s1", func(o *server.Options) {
				if tc.maxPayload > 0 {
					o.MaxPayload = int32(tc.maxPayload)
				}
			})
			if tc.maxMsgSize > 0 {
				nc, js := connectJS(t, urlOf(srv))
				s, err := ensureStream(context.Background(), js, nc, DefaultStream, 1, 0)
				if err != nil {
					t.Fatal(err)
				}
				cfg := s.CachedInfo().Config
				cfg.MaxMsgSize = int32(tc.maxMsgSize)
				if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
					t.Fatal(err)
				}
			}
			l := newLog(t, "n1")
			appendN(t, l, 0, 3000)
			o := Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, Node: "n1", MaxMessageBytes: tc.opt}
			s := startShipper(t, l, o)
			caughtUp(t, s, l)
			reps := verifyOK(t, VerifyOptions{ConnOptions: o.ConnOptions, PublicKeys: []*audit.PublicKey{l.PublicKey()}, Local: l.Dir()})
			if len(reps) != 1 || reps[0].Records != l.DurableSeq() {
				t.Fatalf("Verify = %+v, want all %d records", reps, l.DurableSeq())
			}
			sizes := messageSizes(t, urlOf(srv), DefaultStream, RecordsSubject(l.PublicKey().LogID(), "n1"))
			line := len(mustLines(t, l.Dir())[0])
			for i, n := range sizes {
				if n > tc.want {
					t.Fatalf("message %d holds %d bytes, more than %d", i, n, tc.want)
				}
			}
			if len(sizes) >= int(l.DurableSeq()) || slices.Max(sizes) < tc.want-2*line && tc.want < 1<<19 {
				t.Fatalf("%d records in %d messages of at most %d bytes: not packed up to %d", l.DurableSeq(), len(sizes), slices.Max(sizes), tc.want)
			}
			if st := s.Status(); st.Errors != 0 {
				t.Fatalf("Status() = %+v, want no error", st)
			}
		})
	}
	t.Run("record larger than a message", func(t *testing.T) {
		srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
		l := newLog(t, "n1")
		appendN(t, l, 0, 5)
		s := startShipper(t, l, Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, Node: "n1", MaxMessageBytes: 100})
		waitFor(t, "an error", 10*time.Second, func() bool { return s.Status().Errors > 0 })
		if st := s.Status(); st.Acked != 0 || !strings.Contains(st.LastError, "record 1 is") || !strings.Contains(st.LastError, "max_payload") {
			t.Fatalf("Status() = %+v, want nothing shipped and an error that names the record and what to raise", st)
		}
		lines := mustLines(t, l.Dir())
		if len(lines) != 5 {
			t.Fatalf("the local log holds %d records, want 5", len(lines))
		}
	})
}

func TestRefusesUnsafeStream(t *testing.T) {
	srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
	_, js := connectJS(t, urlOf(srv))
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{"vramseal.audit.>"}}); err != nil {
		t.Fatal(err)
	}
	l := newLog(t, "n1")
	s := startShipper(t, l, Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}})
	appendN(t, l, 0, 3)
	waitFor(t, "an error", 10*time.Second, func() bool { return s.Status().Errors > 0 })
	if st := s.Status(); st.Acked != 0 || st.LastError == "" {
		t.Fatalf("Status() = %+v, want nothing shipped and the error", st)
	}
}

// TestNATSDownThenUp stops the server while the log keeps appending: the
// log is unaffected, the lag shows, fail-closed turns unready; once the
// server is back the shipper catches up with no gap and no duplicate.
func TestNATSDownThenUp(t *testing.T) {
	store, port := t.TempDir(), freePort(t)
	srv := runServer(t, store, port, nil, nil, "s1")
	l := newLog(t, "n1")
	o := Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, FailClosed: true, MaxLag: time.Hour, Node: "n1"}
	s := startShipper(t, l, o)
	appendN(t, l, 0, 200)
	caughtUp(t, s, l)
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready() = %v while caught up", err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !s.Status().Connected })
	appendN(t, l, 200, 500) // the daemon keeps working
	if st := s.Status(); st.LagRecords < 500 {
		t.Fatalf("Status() = %+v, want a lag of at least 500 records", st)
	}
	if err := s.Ready(); err == nil {
		t.Fatal("Ready() = nil for fail-closed replication while NATS is down")
	}
	runServer(t, store, port, nil, nil, "s1")
	caughtUp(t, s, l)
	reps := verifyOK(t, VerifyOptions{ConnOptions: o.ConnOptions, PublicKeys: []*audit.PublicKey{l.PublicKey()}, Local: l.Dir()})
	if len(reps) != 1 || reps[0].Records != l.DurableSeq() {
		t.Fatalf("Verify = %+v, want all %d records", reps, l.DurableSeq())
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready() = %v after catching up", err)
	}
}

// TestClusterServerStopped ships to a 3-server cluster (R3) and stops one
// server in the middle of a stream of appends.
func TestClusterServerStopped(t *testing.T) {
	ss := runCluster(t)
	var urls []string
	for _, s := range ss {
		urls = append(urls, urlOf(s))
	}
	l := newLog(t, "n1")
	o := Options{ConnOptions: ConnOptions{URLs: urls}, AckTimeout: 2 * time.Second, Node: "n1"}
	s := startShipper(t, l, o)
	appendN(t, l, 0, 1500)
	waitFor(t, "some records acknowledged", 20*time.Second, func() bool { return s.Status().Acked > 0 })
	acked := s.Status().Acked
	// Stop the server the shipper is connected to, while appends go on.
	stopped := -1
	for i, srv := range ss {
		if srv.ClientURL() == s.nc.ConnectedUrl() {
			stopped = i
		}
	}
	if stopped < 0 {
		stopped = 0
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 30 {
			appendN(t, l, 1500+i*100, 100)
		}
	}()
	ss[stopped].Shutdown()
	<-done
	caughtUp(t, s, l)
	if got := s.Status().Acked; got < acked {
		t.Fatalf("acked %d after %d", got, acked)
	}
	alive := []string{}
	for i, u := range urls {
		if i != stopped {
			alive = append(alive, u)
		}
	}
	vo := VerifyOptions{ConnOptions: ConnOptions{URLs: alive}, PublicKeys: []*audit.PublicKey{l.PublicKey()}, Local: l.Dir()}
	reps := verifyOK(t, vo)
	if len(reps) != 1 || reps[0].Records != l.DurableSeq() {
		t.Fatalf("Verify = %+v, want all %d records", reps, l.DurableSeq())
	}
	_, js := connectJS(t, alive[0])
	st, err := js.Stream(context.Background(), DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("stream replicas = %d, want 3 on a 3-server cluster", r)
	}
}

// TestFullStream fills a stream with a small max_bytes: shipping stops with
// a clear error, the local log keeps every record and keeps appending.
func TestFullStream(t *testing.T) {
	srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
	l := newLog(t, "n1")
	s := startShipper(t, l, Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, MaxBytes: 16 << 10, MaxMessageBytes: 2048, Node: "n1"})
	appendN(t, l, 0, 400)
	waitFor(t, "the stream is full", 20*time.Second, func() bool { return s.Status().Errors > 0 && s.Status().Acked > 0 })
	st := s.Status()
	if st.Acked >= l.DurableSeq() || st.LastError == "" {
		t.Fatalf("Status() = %+v, want shipping stopped short with an error", st)
	}
	if !errors.Is(st.Err, errStreamFull) {
		t.Fatalf("Status().Err = %v, want errStreamFull", st.Err)
	}
	appendN(t, l, 400, 10)
	if _, err := audit.Verify(context.Background(), l.Dir(), audit.VerifyOptions{PublicKey: l.PublicKey()}); err != nil {
		t.Fatalf("the local log after a full stream: %v", err)
	}
}

// TestShipAcrossEpochs: rotations while shipping start new epochs; each
// new anchor reaches the stream before the records of its epoch.
func TestShipAcrossEpochs(t *testing.T) {
	srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
	l := openLog(t, audit.Options{Node: "n1", FsyncInterval: 5 * time.Millisecond, SegmentMaxBytes: 16 << 10})
	so := Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, Node: "n1"}
	s := startShipper(t, l, so)
	for i := range 10 {
		appendN(t, l, i*50, 50)
	}
	caughtUp(t, s, l)
	if l.Epoch() < 3 {
		t.Fatalf("epoch %d after the appends, want several rotations", l.Epoch())
	}
	reps := verifyOK(t, VerifyOptions{ConnOptions: so.ConnOptions, PublicKeys: []*audit.PublicKey{l.PublicKey()}, Local: l.Dir()})
	if len(reps) != 1 || reps[0].Records != l.DurableSeq() {
		t.Fatalf("Verify = %+v, want all %d records", reps, l.DurableSeq())
	}
}
