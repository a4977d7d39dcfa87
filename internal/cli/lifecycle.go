package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/vram"
)

// The daemon's lifecycle in the audit log. Between a daemon_started of
// backend sim and the next daemon_stopped (or, after a crash, the next
// daemon_started) the weights of every shard sealed were in host memory.
const (
	// EventDaemonStarted records a daemon that is about to serve: its
	// version, backend and why, devices, policy settings and the shards
	// it found resident. It is durable before the daemon serves.
	EventDaemonStarted = "daemon_started"
	// EventDaemonStopped records a daemon that shut down: why, how many
	// shards it released and how long it ran. A daemon_started with no
	// daemon_stopped after it is a daemon that crashed or was killed.
	EventDaemonStopped = "daemon_stopped"
)

// Reasons of daemon_stopped.
const (
	stopSignal   = "signal"   // a signal (SIGINT, SIGTERM) cancelled the command
	stopShutdown = "shutdown" // the command's context was cancelled without a cause
	stopError    = "error"    // the HTTP server failed
)

// residentNote is daemon_started's resident_shards_note: shards live in
// device memory owned by the daemon's process, so none outlives it.
const residentNote = "shards do not survive a restart: their memory is freed with the process that sealed them, so none is resident at start"

// servePublicKey writes the checkpoint public key of the log serve just
// created in dir to path (new, 0644), beside the verification key, and
// says so with the key.
func servePublicKey(dir, path string, say func(slog.Level, string, string)) error {
	pf, err := createPublic(path)
	if err != nil {
		return fmt.Errorf("write checkpoint public key: %w", quotePathError(err))
	}
	pk, err := writeCheckpointPub(pf, dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	say(slog.LevelWarn, "audit_public_key", publicKeyLine(path, pk))
	return nil
}

// backendChoice is the GPU backend serve picked, and why.
type backendChoice struct {
	name   string // "sim" or "cuda"
	reason string // the flag and, for a fallback, the driver's error
}

// String returns the backend's name.
func (b backendChoice) String() string { return b.name }

// lifecycle is a started daemon's side of its daemon_started and
// daemon_stopped records: both carry one correlation ID, so an auditor can
// pair them.
type lifecycle struct {
	log     vram.Auditor
	cid     string
	started time.Time
}

// recordStarted records daemon_started, durably, for a daemon about to
// serve on addr. With a fail-closed log that cannot record it the daemon
// must not serve: the error says so.
func recordStarted(ctx context.Context, log *audit.Log, m *vram.Manager, cfg serveConfig, backend backendChoice, addr string) (*lifecycle, error) {
	infos, err := m.Devices(ctx)
	if err != nil {
		return nil, fmt.Errorf("daemon_started: %w", err)
	}
	var devs, names strings.Builder
	var total int64
	driver := ""
	for i, d := range infos {
		if i > 0 {
			devs.WriteByte(',')
			names.WriteByte(',')
		}
		fmt.Fprintf(&devs, "%d=%s:%d", d.Index, d.UUID, d.TotalBytes)
		names.WriteString(strconv.QuoteToGraphic(d.Name))
		total += int64(d.TotalBytes)
		driver = d.DriverVersion
	}
	attach := attachSocketPath(cfg)
	if attach == "" {
		attach = "none"
	}
	h := log.Health()
	l := &lifecycle{log: log, cid: "daemon-" + narration.NewCorrelationID()[:16], started: time.Now()}
	return l, l.append(ctx, EventDaemonStarted, []audit.Field{
		audit.String("version", version(debug.ReadBuildInfo())),
		audit.String("backend", backend.name),
		audit.String("backend_reason", backend.reason),
		audit.Bool("weights_in_host_memory", backend.name == "sim"),
		audit.Int("gpu_count", int64(len(infos))),
		audit.String("devices", devs.String()),
		audit.String("device_names", names.String()),
		audit.String("driver_version", driver),
		audit.Bytes("vram_total", total),
		audit.Bytes("headroom", int64(cfg.headroom)),
		audit.Bytes("max_shard_size", m.MaxShardBytes()),
		audit.Bytes("chunk_size", m.ChunkSize()),
		audit.Bool("scrub", cfg.scrubRate > 0),
		audit.Int("scrub_rate_bytes_per_second", int64(cfg.scrubRate)),
		audit.Int("scrub_interval_us", cfg.scrubEvery.Microseconds()),
		audit.String("audit_failure", h.Policy.String()),
		audit.String("audit_retain", retainText(cfg.auditRetain)),
		audit.Int("audit_format", int64(log.FormatVersion())),
		audit.Bytes("audit_segment_size", int64(cfg.auditSegment)),
		audit.Int("audit_epoch_interval_us", cfg.auditEpoch.Microseconds()),
		audit.String("audit_log_id", log.PublicKey().LogID()),
		audit.String("listen", addr),
		audit.Bool("token_required", cfg.tokenFile != ""),
		audit.String("attach_socket", attach),
		audit.Bool("test_faults", cfg.testFaults),
		audit.Int("resident_shards_found", int64(len(m.Shards()))),
		audit.String("resident_shards_note", residentNote),
	})
}

func retainText(s string) string {
	if s == "" {
		return "forever"
	}
	return s
}

// stop releases every shard (m.Close, which records each release) and
// records daemon_stopped after them: why the daemon stopped (serveErr, or
// else the cause of ctx's cancellation), how many shards it released and
// how many it could not, and its uptime.
func (l *lifecycle) stop(ctx context.Context, m *vram.Manager, serveErr error) error {
	held := len(m.Shards())
	merr := m.Close(context.Background())
	left := len(m.Shards())
	reason, detail := stopReason(ctx, serveErr)
	err := l.append(ctx, EventDaemonStopped, []audit.Field{
		audit.String("reason", reason),
		audit.String("detail", detail),
		audit.Int("shards_released", int64(held-left)),
		audit.Int("shards_not_released", int64(left)),
		audit.Int("uptime_us", time.Since(l.started).Microseconds()),
	})
	return errors.Join(merr, err)
}

// stopReason says why serve is stopping. A context cancelled with a cause
// of its own was cancelled by a signal: main's signal.NotifyContext gives
// "interrupt signal received" or "terminated signal received".
func stopReason(ctx context.Context, serveErr error) (reason, detail string) {
	if serveErr != nil {
		return stopError, serveErr.Error()
	}
	cause := context.Cause(ctx)
	switch {
	case cause == nil:
		return stopShutdown, "shutdown requested"
	case cause == context.Canceled || cause == context.DeadlineExceeded:
		return stopShutdown, cause.Error()
	}
	return stopSignal, cause.Error()
}

// append records one lifecycle event, durable before it returns. A
// fail-open log that cannot record it is no error (the log counts it).
func (l *lifecycle) append(ctx context.Context, typ string, fields []audit.Field) error {
	_, err := l.log.Append(context.WithoutCancel(ctx), audit.Event{Type: typ, Severity: audit.SeverityHigh,
		CorrelationID: l.cid, Fields: fields, Durable: true})
	if err != nil && !errors.Is(err, audit.ErrNotRecorded) {
		return fmt.Errorf("audit %s: %w", typ, err)
	}
	return nil
}
