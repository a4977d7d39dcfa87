package replicate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStream is the stream's name when [ConnOptions.Stream] is empty.
const DefaultStream = "VRAMSEAL_AUDIT"

// subjectPrefix starts every subject of the stream.
const subjectPrefix = "vramseal.audit."

// ConnOptions say how to reach the JetStream cluster. The zero value needs
// only URLs.
type ConnOptions struct {
	// URLs are the servers, "nats://HOST:PORT" (or tls://); more than one
	// for a cluster. Required.
	URLs []string
	// Creds is a NATS credentials file (user JWT and NKey seed); empty
	// means none.
	Creds string
	// TLSCA, TLSCert and TLSKey are PEM files: the CA that signs the
	// servers' certificates, and a client certificate and key. Empty means
	// the system roots and no client certificate.
	TLSCA, TLSCert, TLSKey string
	// Stream is the stream's name. Empty means [DefaultStream].
	Stream string
	// Name is the connection's name as servers show it. Empty means
	// "vramseal audit".
	Name string
}

func (o ConnOptions) stream() string {
	if o.Stream == "" {
		return DefaultStream
	}
	return o.Stream
}

// connect connects to the cluster. With retry, a cluster that cannot be
// reached yet is retried in the background (the connection reconnects for
// ever); without, the error is returned.
func connect(o ConnOptions, retry bool, handlers ...nats.Option) (*nats.Conn, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("replicate: no server URL")
	}
	for _, u := range o.URLs {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return nil, fmt.Errorf("replicate: server %q: want nats://HOST:PORT or tls://HOST:PORT", truncate(u))
		}
	}
	name := o.Name
	if name == "" {
		name = "vramseal audit"
	}
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.Timeout(5 * time.Second)}
	if retry {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		if o.TLSCert == "" || o.TLSKey == "" {
			return nil, errors.New("replicate: a TLS client certificate needs both the certificate and the key file")
		}
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	opts = append(opts, handlers...)
	nc, err := nats.Connect(strings.Join(o.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("replicate: connect to %s: %w", truncate(strings.Join(o.URLs, ",")), err)
	}
	return nc, nil
}

// Token returns node as a subject token: every byte outside [A-Za-z0-9_-]
// becomes "_" ("gpu-1.example.com" is "gpu-1_example_com"); an empty name
// is "_".
func Token(node string) string {
	if node == "" {
		return "_"
	}
	b := []byte(node)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// RecordsSubject returns the subject of the records of log logID written
// on node.
func RecordsSubject(logID, node string) string {
	return subjectPrefix + logID + "." + Token(node) + ".records"
}

// CheckpointsSubject returns the subject of the checkpoints of log logID
// written on node.
func CheckpointsSubject(logID, node string) string {
	return subjectPrefix + logID + "." + Token(node) + ".checkpoints"
}

// EpochsSubject returns the subject of the epoch anchors of log logID
// written on node.
func EpochsSubject(logID, node string) string {
	return subjectPrefix + logID + "." + Token(node) + ".epochs"
}

// parseSubject splits a subject of the stream into log ID, node token and
// kind ("records", "checkpoints" or "epochs").
func parseSubject(s string) (logID, node, kind string, ok bool) {
	rest, found := strings.CutPrefix(s, subjectPrefix)
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || len(parts[0]) != 16 || parts[1] == "" || parts[1] != Token(parts[1]) ||
		parts[2] != "records" && parts[2] != "checkpoints" && parts[2] != "epochs" {
		return "", "", "", false
	}
	for _, c := range parts[0] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", "", "", false
		}
	}
	return parts[0], parts[1], parts[2], true
}

// streamConfig returns the configuration a new stream gets.
func streamConfig(name string, replicas int, maxBytes int64) jetstream.StreamConfig {
	if maxBytes <= 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name: name, Subjects: []string{subjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Replicas: replicas, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew,
		MaxBytes: maxBytes, MaxMsgs: -1, Duplicates: 2 * time.Minute,
		DenyDelete: true, DenyPurge: true, AllowRollup: false,
		Description: "vramseal audit logs: records and signed checkpoints, append-only",
	}
}

// checkStream refuses a stream whose configuration would let its contents
// be deleted, replaced or lost.
func checkStream(cfg jetstream.StreamConfig) error {
	var missing []string
	if !cfg.DenyDelete {
		missing = append(missing, "deny_delete")
	}
	if !cfg.DenyPurge {
		missing = append(missing, "deny_purge")
	}
	if cfg.AllowRollup {
		missing = append(missing, "no rollup")
	}
	if cfg.Discard != jetstream.DiscardNew {
		missing = append(missing, "discard new")
	}
	if cfg.MaxAge != 0 || cfg.MaxMsgs > 0 || cfg.MaxMsgsPerSubject > 0 {
		missing = append(missing, "no age or count limit")
	}
	covered := false
	for _, s := range cfg.Subjects {
		covered = covered || s == subjectPrefix+">" || s == ">"
	}
	if !covered {
		missing = append(missing, "subjects "+subjectPrefix+">")
	}
	if len(missing) > 0 {
		return fmt.Errorf("replicate: stream %s exists without %s: an audit stream must keep every message; fix or rename it",
			cfg.Name, strings.Join(missing, ", "))
	}
	return nil
}

// ensureStream returns the stream, creating it when it does not exist.
// replicas 0 means 3 when the connection knows of 3 or more servers, else 1.
func ensureStream(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, name string, replicas int, maxBytes int64) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if replicas <= 0 {
			replicas = 1
			if len(nc.Servers()) >= 3 {
				replicas = 3
			}
		}
		s, err = js.CreateStream(ctx, streamConfig(name, replicas, maxBytes))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("replicate: stream %s: %w", name, err)
	}
	if err := checkStream(s.CachedInfo().Config); err != nil {
		return nil, err
	}
	return s, nil
}

// truncate shortens text from outside (URLs, subjects, server errors) for
// an error message and escapes what a terminal could interpret.
func truncate(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029 || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 {
			return '?'
		}
		return r
	}, s)
}
