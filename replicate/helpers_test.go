package replicate

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vramseal/vramseal/audit"
)

// runServer starts an embedded nats-server with JetStream on file storage
// in storeDir; port 0 picks a free port. The server stops with the test.
func runServer(t testing.TB, storeDir string, port int, cluster *server.ClusterOpts, routes []*url.URL, name string, mutate ...func(*server.Options)) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	o := &server.Options{ServerName: name, Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir,
		NoLog: true, NoSigs: true, Routes: routes}
	if cluster != nil {
		o.Cluster = *cluster
	}
	for _, f := range mutate {
		f(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// connectJS connects to url for the rest of the test.
func connectJS(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runCluster starts 3 servers routed to each other on 127.0.0.1.
func runCluster(t testing.TB) []*server.Server {
	t.Helper()
	cports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []*url.URL
	for _, p := range cports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(p)})
	}
	var ss []*server.Server
	for i, p := range cports {
		ss = append(ss, runServer(t, t.TempDir(), 0, &server.ClusterOpts{Name: "vramseal-test", Host: "127.0.0.1", Port: p}, routes, fmt.Sprintf("s%d", i+1)))
	}
	// Wait for the JetStream meta leader (a deadline, not a sleep).
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, s := range ss {
			if s.JetStreamIsLeader() {
				return ss
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newLog initializes and opens an audit log.
func newLog(t testing.TB, node string) *audit.Log {
	t.Helper()
	return openLog(t, audit.Options{Node: node, FsyncInterval: 5 * time.Millisecond, CheckpointInterval: 20 * time.Millisecond})
}

// openLog initializes and opens an audit log with o, closed with the test.
func openLog(t testing.TB, o audit.Options) *audit.Log {
	t.Helper()
	dir := t.TempDir() + "/audit"
	if _, err := audit.Init(dir, o); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func event(i int) audit.Event {
	return audit.Event{Type: "shard_sealed", Severity: audit.SeverityInfo, Fields: []audit.Field{
		audit.String("shard_id", "s"+strconv.Itoa(i)), audit.Int("n", int64(i)), audit.Bytes("size", 1<<20)}}
}

func appendN(t testing.TB, l *audit.Log, from, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(context.Background(), event(from+i)); err != nil {
			t.Fatalf("Append = %v", err)
		}
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatalf("Flush = %v", err)
	}
}

// startShipper runs a shipper until the test ends.
func startShipper(t testing.TB, l *audit.Log, o Options) *Shipper {
	t.Helper()
	if o.RetryInterval == 0 {
		o.RetryInterval = 20 * time.Millisecond
	}
	if o.Node == "" {
		o.Node = "gpu-1.example"
	}
	s, err := New(l, o)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool, why ...*string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			for _, w := range why {
				what += ": " + *w
			}
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// caughtUp waits until the stream has acknowledged every durable record and
// the latest checkpoint.
func caughtUp(t testing.TB, s *Shipper, l *audit.Log) {
	t.Helper()
	var why string
	waitFor(t, "replication caught up", 20*time.Second, func() bool {
		st := s.Status()
		ck, err := audit.LatestCheckpoint(l.Dir(), audit.ReadOptions{})
		if err != nil {
			why = err.Error()
			return false
		}
		why = fmt.Sprintf("status %+v, latest checkpoint %d", st, ck.Size)
		return st.Acked == l.DurableSeq() && st.Acked > 0 && st.AckedCheckpoint == ck.Size && ck.Size == st.Acked
	}, &why)
}

func urlOf(s *server.Server) string { return s.ClientURL() }

// verifyOK verifies the stream and requires every node to pass.
func verifyOK(t testing.TB, o VerifyOptions) []NodeReport {
	t.Helper()
	reps, err := Verify(context.Background(), o)
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	for _, r := range reps {
		if r.Err != nil {
			t.Fatalf("Verify: node %s: %v", r.Node, r.Err)
		}
	}
	return reps
}
