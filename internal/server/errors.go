package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/tensor"
	"github.com/vramseal/vramseal/vram"
)

// Error codes of the API. They are stable: clients branch on them.
const (
	CodeInvalid      = "invalid_request"
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
	CodeExists       = "already_exists"
	CodeInUse        = "in_use"
	CodeInsufficient = "insufficient_vram"
	CodeIntegrity    = "integrity_failure"
	CodePolicy       = "policy_violation"
	CodeStopped      = "worker_stopped"
	// CodeQuarantined: the shard failed a verification and is refused
	// until it is released (409).
	CodeQuarantined = "quarantined"
	// CodeProvenance is a model whose files do not match what their
	// publisher signed or listed (a digest mismatch, a bad signature or
	// key, a file the signature does not cover).
	CodeProvenance    = "provenance_failed"
	CodeTooLarge      = "too_large"
	CodeAuditFailed   = "audit_unavailable"
	CodeUnavailable   = "unavailable"
	CodeInternal      = "internal"
	CodeMethod        = "method_not_allowed"
	retryAfterSeconds = 30
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes one error.
type ErrorDetail struct {
	Code          string `json:"code"`
	Message       string `json:"message"`
	CorrelationID string `json:"correlation_id"`
	Retryable     bool   `json:"retryable"`
	// RetryAfterSeconds is set for retryable errors.
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
	// RequestedBytes and AvailableBytes are set for insufficient_vram.
	RequestedBytes int64 `json:"requested_bytes,omitempty"`
	AvailableBytes int64 `json:"available_bytes,omitempty"`
	// Chunks names the changed chunk ranges for integrity_failure.
	Chunks []vram.ChunkRange `json:"chunks,omitempty"`
	// Tensors names what the changed chunks touch in the shard's tensor
	// map (bounded; MoreTensors counts the rest), for integrity_failure.
	Tensors     []string `json:"tensors,omitempty"`
	MoreTensors int      `json:"more_tensors,omitempty"`
	// Holders names the attached processes for in_use.
	Holders []AttachmentJSON `json:"holders,omitempty"`
}

// httpError is an error with a status and a stable code chosen by a handler.
type httpError struct {
	status int
	code   string
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, CodeInvalid, fmt.Errorf(format, args...)}
}

// classify maps an error to a status and body.
func classify(ctx context.Context, err error) (int, ErrorDetail) {
	d := ErrorDetail{Message: err.Error(), CorrelationID: narration.CorrelationID(ctx)}
	var he *httpError
	var ce *vram.CapacityError
	var ie *vram.IntegrityError
	var iu *vram.InUseError
	var qe *vram.QuarantinedError
	switch {
	case errors.As(err, &he):
		d.Code = he.code
		return he.status, d
	case errors.As(err, &ce):
		d.Code, d.Retryable = CodeInsufficient, ce.Retryable()
		if d.Retryable {
			d.RetryAfterSeconds = retryAfterSeconds
		}
		d.RequestedBytes, d.AvailableBytes = ce.Requested, ce.Available
		return http.StatusInsufficientStorage, d
	case errors.As(err, &ie):
		d.Code, d.Chunks, d.Tensors, d.MoreTensors = CodeIntegrity, ie.Changed, ie.Tensors, ie.MoreTensors
		return http.StatusConflict, d
	case provenance.IsIntegrity(err):
		d.Code = CodeProvenance
		return http.StatusConflict, d
	case errors.Is(err, provenance.ErrMalformed), errors.Is(err, tensor.ErrMalformed):
		d.Code = CodeInvalid
		return http.StatusBadRequest, d
	case errors.As(err, &qe):
		d.Code = CodeQuarantined
		return http.StatusConflict, d
	case errors.Is(err, vram.ErrStopped):
		d.Code = CodeStopped
		return http.StatusConflict, d
	case errors.Is(err, vram.ErrPolicy):
		d.Code = CodePolicy
		return http.StatusConflict, d
	case errors.Is(err, vram.ErrInvalidInput):
		d.Code = CodeInvalid
		return http.StatusBadRequest, d
	case errors.Is(err, vram.ErrNotFound):
		d.Code = CodeNotFound
		return http.StatusNotFound, d
	case errors.As(err, &iu):
		d.Code, d.Holders = CodeInUse, attachmentsJSON(iu.Holders)
		return http.StatusConflict, d
	case errors.Is(err, vram.ErrExists):
		d.Code = CodeExists
		return http.StatusConflict, d
	case errors.Is(err, vram.ErrAuditFailed):
		d.Code, d.Retryable, d.RetryAfterSeconds = CodeAuditFailed, true, retryAfterSeconds
		return http.StatusServiceUnavailable, d
	case errors.Is(err, vram.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		d.Code, d.Retryable, d.RetryAfterSeconds = CodeUnavailable, true, 1
		return http.StatusServiceUnavailable, d
	default:
		d.Code = CodeInternal
		return http.StatusInternalServerError, d
	}
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, d := classify(r.Context(), err)
	if d.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(d.RetryAfterSeconds))
	}
	writeJSON(w, status, ErrorBody{Error: d})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
