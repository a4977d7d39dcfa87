package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/replicate"
)

// replicateConfig holds serve's --audit-replicate flags.
type replicateConfig struct {
	urls       []string
	creds      string
	tlsCA      string
	tlsCert    string
	tlsKey     string
	replicas   int
	node       string
	failClosed bool
}

func (c *replicateConfig) flags(f *pflag.FlagSet) {
	f.StringArrayVar(&c.urls, "audit-replicate", nil, "ship every audit record and signed checkpoint to the NATS JetStream server nats://HOST:PORT (repeat for each server of a cluster)")
	f.StringVar(&c.creds, "audit-replicate-creds", "", "NATS credentials file for --audit-replicate")
	f.StringVar(&c.tlsCA, "audit-replicate-tls-ca", "", "PEM file of the CA that signs the NATS servers' certificates")
	f.StringVar(&c.tlsCert, "audit-replicate-tls-cert", "", "PEM client certificate for NATS (with --audit-replicate-tls-key)")
	f.StringVar(&c.tlsKey, "audit-replicate-tls-key", "", "PEM client key for NATS")
	f.IntVar(&c.replicas, "audit-replicas", 0, "replicas of the audit stream when it is created (default 3 when the cluster has 3 or more servers, else 1)")
	f.StringVar(&c.node, "audit-replicate-node", "", "this node's name in the audit records and the stream's subjects (default the host name)")
	f.BoolVar(&c.failClosed, "audit-replicate-fail-closed", false, "report the daemon not ready while the stream is unreachable or more than 30s behind (default: fail-open, the backlog waits in the local log)")
}

// check validates the flags; it returns a usage error.
func (c *replicateConfig) check() error {
	if len(c.urls) == 0 {
		for _, set := range []string{c.creds, c.tlsCA, c.tlsCert, c.tlsKey, c.node} {
			if set != "" {
				return errors.New("the --audit-replicate-* flags need --audit-replicate nats://HOST:PORT")
			}
		}
		if c.replicas != 0 || c.failClosed {
			return errors.New("--audit-replicas and --audit-replicate-fail-closed need --audit-replicate nats://HOST:PORT")
		}
		return nil
	}
	if c.replicas < 0 || c.replicas > 5 {
		return fmt.Errorf("--audit-replicas %d: JetStream takes 1 to 5 replicas", c.replicas)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--audit-replicate-tls-cert and --audit-replicate-tls-key go together")
	}
	if len(c.node) > 256 {
		return fmt.Errorf("--audit-replicate-node: %d bytes, at most 256", len(c.node))
	}
	return nil
}

// startReplication starts shipping log when --audit-replicate is set; it
// returns nil, and a no-op stop, when it is not. stop waits (up to the
// context's end) for the shipper to ship what the log holds, then stops it.
func startReplication(c replicateConfig, log *audit.Log, say func(slog.Level, string, string)) (*replicate.Shipper, func(context.Context), error) {
	if len(c.urls) == 0 {
		return nil, func(context.Context) {}, nil
	}
	s, err := replicate.New(log, replicate.Options{
		ConnOptions: replicate.ConnOptions{URLs: c.urls, Creds: c.creds, TLSCA: c.tlsCA, TLSCert: c.tlsCert, TLSKey: c.tlsKey},
		Node:        c.node, Replicas: c.replicas, FailClosed: c.failClosed, Narrate: say,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("audit replication: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var drain func(context.Context)
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			say(slog.LevelError, "audit_replication_stopped", "audit replication stopped: "+err.Error())
		}
	}()
	var once sync.Once
	stop := func(wctx context.Context) { once.Do(func() { drain(wctx) }) }
	drain = func(wctx context.Context) {
		for st := s.Status(); st.Connected && !st.Stopped && st.Acked < log.DurableSeq(); st = s.Status() {
			select {
			case <-wctx.Done():
				st := s.Status()
				say(slog.LevelWarn, "audit_replication_behind", fmt.Sprintf("audit replication: stopping %d records behind; they are shipped at the next start", st.LagRecords))
				cancel()
				<-done
				s.Close()
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
		<-done
		s.Close()
	}
	return s, stop, nil
}

// replicationHealth is the "replication" member of /healthz.
func replicationHealth(s *replicate.Shipper) map[string]any {
	st := s.Status()
	h := map[string]any{"connected": st.Connected, "stream": st.Stream, "subject": st.Subject,
		"durable_seq": st.Durable, "acked_seq": st.Acked, "acked_checkpoint": st.AckedCheckpoint,
		"lag_records": st.LagRecords, "lag_seconds": st.Lag.Seconds(), "shipped": st.Shipped, "errors": st.Errors,
		"policy": map[bool]string{true: "fail-closed", false: "fail-open"}[st.FailClosed], "stopped": st.Stopped}
	if st.LastError != "" {
		h["error"] = st.LastError
	}
	if err := s.Ready(); err != nil {
		h["ready_error"] = err.Error()
	}
	return h
}
