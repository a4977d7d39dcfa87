package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/replicate"
)

// TestServeReplicatesAndVerifyFrom runs serve --audit-replicate against an
// embedded NATS server, waits for the log's records in the stream, and
// verifies the copy with audit verify --from --local.
func TestServeReplicatesAndVerifyFrom(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	defer ns.Shutdown()
	url := ns.ClientURL()

	data := t.TempDir()
	dir := filepath.Join(data, "audit")
	o := audit.Options{Service: "vramseal", Node: "gpu-7.lab"}
	if _, err := audit.Init(dir, o); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for range 25 {
		if _, err := l.Append(context.Background(), audit.Event{Type: "test_event", Severity: audit.SeverityInfo}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLIContext(ctx, "serve", "--listen", "127.0.0.1:0", "--device", "sim", "--sim-capacity", "64MiB",
			"--data-dir", data, "--attach-socket", "none", "--audit-replicate", url, "--audit-replicate-node", "gpu-7.lab")
		done <- err
	}()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	subj := replicate.RecordsSubject(l.PublicKey().LogID(), "gpu-7.lab")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// A message holds one or more records, a line each: the last
		// line of the last message is the last record shipped.
		if s, err := js.Stream(ctx, replicate.DefaultStream); err == nil {
			if m, err := s.GetLastMsgForSubject(ctx, subj); err == nil {
				if r, err := audit.ParseRecord(m.Data[bytes.LastIndexByte(m.Data, '\n')+1:]); err == nil && r.Seq >= 25 {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon's records did not reach the stream within 20s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve = %v", err)
	}
	out, _, err := runCLI(t, "audit", "verify", "--from", url, "--local", dir, "--public-key", filepath.Join(dir, "checkpoint.pub"))
	if err != nil || !strings.Contains(out, "OK: node gpu-7_lab") || !strings.Contains(out, "local log") {
		t.Fatalf("audit verify --from = %v\n%s", err, out)
	}
	// /healthz's replication member, from a shipper of the reopened log.
	l2, err := audit.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close(context.Background())
	sh, err := replicate.New(l2, replicate.Options{ConnOptions: replicate.ConnOptions{URLs: []string{url}}, Node: "gpu-7.lab"})
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	h := replicationHealth(sh)
	for _, k := range []string{"connected", "acked_seq", "durable_seq", "lag_records", "lag_seconds", "errors", "policy"} {
		if _, ok := h[k]; !ok {
			t.Errorf("replication health %v lacks %q", h, k)
		}
	}
	// Bad input is a usage error.
	for _, args := range [][]string{
		{"audit", "verify", "--from", url, dir},
		{"audit", "verify", dir, "--local", dir},
		{"audit", "verify", "--from", "http://x"},
	} {
		if _, _, err := runCLI(t, args...); err == nil {
			t.Errorf("%q succeeded", args)
		}
	}
	for _, args := range [][]string{
		{"serve", "--audit-replicas", "3"},
		{"serve", "--audit-replicate-fail-closed"},
		{"serve", "--audit-replicate", url, "--audit-replicas", "6"},
		{"serve", "--audit-replicate", url, "--audit-replicate-node", strings.Repeat("n", 257)},
	} {
		if _, _, err := runCLI(t, args...); ExitCode(err) != 2 {
			t.Errorf("%q: exit %d (%v), want 2", args, ExitCode(err), err)
		}
	}
}

func runCLIContext(ctx context.Context, args ...string) (string, string, error) {
	out := &lockedBuffer{serving: make(chan struct{})}
	errb := &lockedBuffer{serving: make(chan struct{})}
	cmd := New(out, errb)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	out.mu.Lock()
	defer out.mu.Unlock()
	errb.mu.Lock()
	defer errb.mu.Unlock()
	return out.b.String(), errb.b.String(), err
}
