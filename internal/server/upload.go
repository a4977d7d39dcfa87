package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/narration"
)

// Defaults of the upload limits ([Options]).
const (
	DefaultUploadIdleTimeout = 30 * time.Second
	DefaultUploadMinRate     = 1 << 20 // bytes per second
	DefaultUploadRateGrace   = 10 * time.Second
)

// EventUploadAborted is the audit event of an upload the daemon cut off
// because it was too slow: its VRAM reservation was freed (the manager
// records that as vram_deallocated, reason seal_aborted, with the same
// correlation ID). Fields: shard_id (as requested; empty when the daemon
// was to generate one), reason (stalled, too_slow or deadline),
// received_bytes, expected_bytes, elapsed_us, min_rate_bytes (per second,
// 0 when off), timeout_us (0 when none).
const EventUploadAborted = "upload_aborted"

// ActionUploadAborted narrates an aborted upload.
const ActionUploadAborted = "upload_aborted"

// Reasons of an [UploadAbortedError].
const (
	UploadStalled  = "stalled"  // no byte for the idle timeout
	UploadTooSlow  = "too_slow" // average rate below the minimum after the grace period
	UploadDeadline = "deadline" // the total deadline passed
)

// CodeUploadTooSlow is the error code (HTTP 408) of an upload cut off by
// the limits of [Options]: stalled, too slow or past its deadline.
const CodeUploadTooSlow = "upload_too_slow"

// UploadAbortedError is the cause of a seal that failed because its upload
// broke a limit of [Options].
type UploadAbortedError struct {
	Reason             string // UploadStalled, UploadTooSlow or UploadDeadline
	Received, Expected int64  // bytes
	Elapsed            time.Duration
	MinRate            int64         // bytes per second; 0 when off
	Timeout            time.Duration // the total deadline; 0 when none
	Idle               time.Duration
}

func (e *UploadAbortedError) Error() string {
	got := fmt.Sprintf("%s of %s in %s", narration.FormatBytes(e.Received), narration.FormatBytes(e.Expected), e.Elapsed.Round(time.Millisecond))
	switch e.Reason {
	case UploadTooSlow:
		return fmt.Sprintf("upload aborted: %s, below the minimum rate of %s/s", got, narration.FormatBytes(e.MinRate))
	case UploadDeadline:
		return fmt.Sprintf("upload aborted: %s, past the upload timeout of %s", got, e.Timeout)
	}
	return fmt.Sprintf("upload aborted: %s, then nothing for %s", got, e.Idle)
}

// uploadLimits are an upload's limits, from [Options] with defaults
// applied: idle > 0; minRate 0 means no rate rule; timeout 0 means no
// fixed total deadline.
type uploadLimits struct {
	idle, grace, timeout time.Duration
	minRate              int64
}

func (s *Server) uploadLimits() uploadLimits {
	l := uploadLimits{idle: s.opts.UploadIdleTimeout, grace: s.opts.UploadRateGrace, timeout: max(s.opts.UploadTimeout, 0), minRate: s.opts.UploadMinRate}
	if l.idle <= 0 {
		l.idle = DefaultUploadIdleTimeout
	}
	if l.grace <= 0 {
		l.grace = DefaultUploadRateGrace
	}
	switch {
	case l.minRate == 0:
		l.minRate = DefaultUploadMinRate
	case l.minRate < 0:
		l.minRate = 0
	}
	return l
}

// uploadReader reads an upload's body under its limits. Before every read
// it sets the connection's read deadline to the earliest of: the idle
// timeout from now; the moment the bytes received so far fall below the
// minimum average rate (start + max(grace, received/rate)); and the total
// deadline. So an upload that trickles is cut off once its average rate is
// too low, not only when it stops altogether, and its reservation is
// freed instead of held for as long as the trickle lasts. A read that
// returns after a limit passed is refused too, for writers that do not
// support deadlines (then a blocked read lasts until the server's own
// timeouts).
type uploadReader struct {
	r        io.Reader
	rc       *http.ResponseController
	lim      uploadLimits
	expected int64
	start    time.Time
	now      func() time.Time
	done     int64
	aborted  *UploadAbortedError
}

func newUploadReader(w http.ResponseWriter, body io.Reader, expected int64, lim uploadLimits) *uploadReader {
	return &uploadReader{r: body, rc: http.NewResponseController(w), lim: lim, expected: expected, start: time.Now(), now: time.Now}
}

// limit returns the deadline of the next read and the reason that
// applies to it.
func (u *uploadReader) limit(now time.Time) (time.Time, string) {
	at, why := now.Add(u.lim.idle), UploadStalled
	if u.lim.minRate > 0 {
		// Seconds the bytes so far may take at the minimum rate; past
		// about 292 years a Duration overflows, and such a deadline is no
		// deadline.
		secs := float64(u.done) / float64(u.lim.minRate)
		need := time.Duration(math.MaxInt64)
		if secs < float64(math.MaxInt64/int64(time.Second)) {
			need = time.Duration(secs * float64(time.Second))
		}
		if t := u.start.Add(max(u.lim.grace, need)); t.Before(at) {
			at, why = t, UploadTooSlow
		}
	}
	if u.lim.timeout > 0 {
		if t := u.start.Add(u.lim.timeout); !t.After(at) {
			at, why = t, UploadDeadline
		}
	}
	return at, why
}

func (u *uploadReader) abort(now time.Time, why string) error {
	u.aborted = &UploadAbortedError{Reason: why, Received: u.done, Expected: u.expected, Elapsed: now.Sub(u.start),
		MinRate: u.lim.minRate, Timeout: u.lim.timeout, Idle: u.lim.idle}
	return u.aborted
}

func (u *uploadReader) Read(p []byte) (int, error) {
	if u.aborted != nil {
		return 0, u.aborted
	}
	now := u.now()
	at, why := u.limit(now)
	if !now.Before(at) {
		return 0, u.abort(now, why)
	}
	// Not every ResponseWriter supports deadlines (httptest recorders).
	_ = u.rc.SetReadDeadline(at)
	n, err := u.r.Read(p)
	u.done += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		// A read cut by the deadline fails with a timeout; say which
		// limit it was.
		if now := u.now(); !now.Before(at) {
			return n, u.abort(now, why)
		}
	}
	return n, err
}

// finish ends the upload's hold on the connection once the seal returned.
// After an abort the connection is closed with the answer: the server
// would otherwise wait to drain the rest of a body that is not coming.
// Otherwise the deadline is cleared, since the connection may serve
// further requests.
func (u *uploadReader) finish(w http.ResponseWriter) {
	if u.aborted != nil {
		w.Header().Set("Connection", "close")
		return
	}
	_ = u.rc.SetReadDeadline(time.Time{})
}

// uploadAborted records and narrates an upload cut off by its limits.
// The operation has failed already, so a failure to record it is only
// narrated.
func (s *Server) uploadAborted(ctx context.Context, shardID string, e *UploadAbortedError) {
	ctx = context.WithoutCancel(ctx)
	if s.opts.Audit != nil {
		_, err := s.opts.Audit.Append(ctx, audit.Event{Type: EventUploadAborted, Severity: audit.SeverityMedium,
			CorrelationID: narration.CorrelationID(ctx), Fields: []audit.Field{
				audit.String("shard_id", shardID),
				audit.String("reason", e.Reason),
				audit.Bytes("received_bytes", e.Received),
				audit.Bytes("expected_bytes", e.Expected),
				audit.Int("elapsed_us", e.Elapsed.Microseconds()),
				audit.Bytes("min_rate_bytes", e.MinRate),
				audit.Int("timeout_us", e.Timeout.Microseconds()),
			}})
		if err != nil && s.opts.Narrator.Enabled(slog.LevelError, "audit_failed") {
			s.opts.Narrator.Emit(ctx, &narration.Event{Level: slog.LevelError, Actor: "api", Action: "audit_failed", Target: EventUploadAborted,
				ErrorKind: "audit", Error: err.Error(), Human: "Audit event upload_aborted was not recorded"})
		}
	}
	if n := s.opts.Narrator; n.Enabled(slog.LevelWarn, ActionUploadAborted) {
		ev := narration.Event{Level: slog.LevelWarn, Actor: "api", Action: ActionUploadAborted, Target: shardID, ErrorKind: CodeUploadTooSlow, Error: e.Error(),
			Human: fmt.Sprintf("Aborted an upload (%s) after %s of %s; freed its VRAM", e.Reason, narration.FormatBytes(e.Received), narration.FormatBytes(e.Expected))}
		copy(ev.Attrs[:], []narration.Attr{narration.Str("reason", e.Reason), narration.Bytes("received_bytes", e.Received), narration.Bytes("expected_bytes", e.Expected)})
		n.Emit(ctx, &ev)
	}
}
