package cli

import (
	"context"
	"errors"
	"io/fs"

	"github.com/vramseal/vramseal/vram"
)

// ExitError carries a process exit status with an error.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode maps an error from a command to a process exit status, the same
// for local commands (seal) and daemon clients: the code of an
// [ExitError]; 2 for bad input (including a missing input file); 3 for a
// retryable shortage of VRAM; 4 for an integrity failure, a VRAM-only
// policy violation or a stopped worker; 5 for a conflict (a shard that
// processes are attached to, a shard ID already taken); 130 for an
// operation interrupted (Ctrl-C or SIGTERM cancel the command's context);
// otherwise 1.
func ExitCode(err error) int {
	var ee *ExitError
	switch {
	case errors.As(err, &ee) && ee.Code != 0:
		return ee.Code
	case errors.Is(err, vram.ErrInvalidInput), errors.Is(err, fs.ErrNotExist):
		return 2
	case errors.Is(err, vram.ErrInsufficientVRAM):
		return 3
	case errors.Is(err, vram.ErrIntegrity), errors.Is(err, vram.ErrPolicy), errors.Is(err, vram.ErrStopped):
		return 4
	case errors.Is(err, vram.ErrInUse), errors.Is(err, vram.ErrExists):
		return 5
	case errors.Is(err, context.Canceled):
		return 130
	}
	return 1
}
