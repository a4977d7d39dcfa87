package attach

import (
	"errors"
	"fmt"
)

// Error codes, the "code" member of an error frame. They are stable:
// clients branch on them. See the package comment for when each is sent.
const (
	CodeBadFrame           = "bad_frame"
	CodeUnsupportedVersion = "unsupported_version"
	CodeUnknownOp          = "unknown_op"
	CodeInvalidInput       = "invalid_input"
	CodePermissionDenied   = "permission_denied"
	CodeTooManyConnections = "too_many_connections"
	CodeTooManyAttachments = "too_many_attachments"
	CodeNotFound           = "not_found"
	CodeAlreadyAttached    = "already_attached"
	CodeNotAttached        = "not_attached"
	CodeWorkerStopped      = "worker_stopped"
	CodeIntegrityFailed    = "integrity_failed"
	CodeAuditUnavailable   = "audit_unavailable"
	CodeShuttingDown       = "shutting_down"
	CodeInternal           = "internal"
)

// Sentinels wrapped by every [*ProtocolError] that the parsers and frame
// readers of this package return, one per code they produce.
var (
	// ErrBadFrame: the frame is malformed, oversized or truncated, or
	// came with a descriptor it must not carry. The stream cannot be
	// trusted any more; close it.
	ErrBadFrame = errors.New("attach: bad frame")
	// ErrUnsupportedVersion: the frame's "v" is an integer other than
	// [Version].
	ErrUnsupportedVersion = errors.New("attach: unsupported protocol version")
	// ErrUnknownOp: a well-formed request names no operation.
	ErrUnknownOp = errors.New("attach: unknown operation")
	// ErrInvalidInput: a well-formed request has a member value out of
	// range.
	ErrInvalidInput = errors.New("attach: invalid input")
)

// ProtocolError is a frame that breaks the protocol, with the error code
// the daemon answers it with. It unwraps to [ErrBadFrame],
// [ErrUnsupportedVersion], [ErrUnknownOp] or [ErrInvalidInput].
type ProtocolError struct {
	// Code is one of [CodeBadFrame], [CodeUnsupportedVersion],
	// [CodeUnknownOp] and [CodeInvalidInput].
	Code string
	// Msg says what is wrong, without quoting more than a short, escaped
	// part of the input.
	Msg string
	// ID is the request's id when it was read before the fault was found
	// (so that the answer can echo it), else 0. Always 0 for bad_frame
	// and unsupported_version, which are answered with id 0.
	ID int64
}

// Error returns "attach: CODE: MSG".
func (e *ProtocolError) Error() string { return "attach: " + e.Code + ": " + e.Msg }

// Unwrap returns the sentinel of the error's code.
func (e *ProtocolError) Unwrap() error {
	switch e.Code {
	case CodeUnsupportedVersion:
		return ErrUnsupportedVersion
	case CodeUnknownOp:
		return ErrUnknownOp
	case CodeInvalidInput:
		return ErrInvalidInput
	default:
		return ErrBadFrame
	}
}

func badFrame(format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: CodeBadFrame, Msg: fmt.Sprintf(format, args...)}
}

// Fatal reports whether a request with this error ends the connection:
// true for bad_frame and unsupported_version.
func (e *ProtocolError) Fatal() bool {
	return e.Code == CodeBadFrame || e.Code == CodeUnsupportedVersion
}
