package replicate

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	appendN(t, l, 0, 2500) // more than two batches
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
	if n := subjectCount(t, urlOf(srv), DefaultStream, subj); n != l.DurableSeq() {
		t.Fatalf("stream holds %d records, the log %d", n, l.DurableSeq())
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

// Batches larger than the server allows: the shipper takes the server's
// limit, says so once, and loses or repeats nothing. A server whose limit
// was raised takes the larger batches.
func TestBatchLargerThanTheServerAllows(t *testing.T) {
	for _, tc := range []struct{ serverLimit, batch, narrations, taken int }{
		{0, 2500, 1, 1000}, // the server's default, 1000
		{3000, 2500, 0, 0}, // raised far enough
		{500, 0, 1, 500},   // lowered below the shipper's default
	} {
		srv := runServer(t, t.TempDir(), 0, nil, nil, "s1", func(o *server.Options) { o.JetStreamLimits.MaxBatchSize = tc.serverLimit })
		l := newLog(t, "gpu-1.example")
		var mu sync.Mutex
		var reduced []string
		o := Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, BatchRecords: tc.batch,
			Narrate: func(_ slog.Level, event, msg string) {
				if event == "audit_replication_batch_reduced" {
					mu.Lock()
					reduced = append(reduced, msg)
					mu.Unlock()
				}
			}}
		appendN(t, l, 0, 6000)
		s := startShipper(t, l, o)
		caughtUp(t, s, l)
		subj := RecordsSubject(l.PublicKey().LogID(), "gpu-1.example")
		if n := subjectCount(t, urlOf(srv), DefaultStream, subj); n != l.DurableSeq() {
			t.Fatalf("%+v: the stream holds %d records, the log %d", tc, n, l.DurableSeq())
		}
		verifyOK(t, VerifyOptions{ConnOptions: o.ConnOptions, PublicKeys: []*audit.PublicKey{l.PublicKey()}, Local: l.Dir()})
		if st := s.Status(); st.Errors != 0 {
			t.Errorf("%+v: %d errors counted (%s): a smaller batch is not a failure", tc, st.Errors, st.LastError)
		}
		mu.Lock()
		got := slices.Clone(reduced)
		mu.Unlock()
		if len(got) != tc.narrations {
			t.Errorf("%+v: %d batch_reduced narrations (%q), want %d", tc, len(got), got, tc.narrations)
		}
		if len(got) > 0 && (!strings.Contains(got[0], "max_msgs") || !strings.Contains(got[0], "at most "+strconv.Itoa(tc.taken)+" records")) {
			t.Errorf("%+v: the narration does not give the server's limit and what to raise: %q", tc, got[0])
		}
	}
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
	srv = runServer(t, store, port, nil, nil, "s1")
	caughtUp(t, s, l)
	if n := subjectCount(t, urlOf(srv), DefaultStream, RecordsSubject(l.PublicKey().LogID(), "n1")); n != l.DurableSeq() {
		t.Fatalf("stream holds %d records, the log %d", n, l.DurableSeq())
	}
	verifyOK(t, VerifyOptions{ConnOptions: o.ConnOptions, PublicKeys: []*audit.PublicKey{l.PublicKey()}, Local: l.Dir()})
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
	s := startShipper(t, l, Options{ConnOptions: ConnOptions{URLs: []string{urlOf(srv)}}, MaxBytes: 16 << 10, BatchRecords: 20, Node: "n1"})
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
