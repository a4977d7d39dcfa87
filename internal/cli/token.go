package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// maxTokenFileBytes bounds what a token file may hold.
const maxTokenFileBytes = 4 << 10

// privateMode reports whether a private file's mode keeps it private:
// nothing for others and no group write, and group read only for a file
// another user owns (a credential root provisions for the daemon's
// group, as a Kubernetes secret mounted with fsGroup is: the daemon can
// read it only through the group). A file the daemon's own user owns
// must give the group nothing.
func privateMode(st os.FileInfo) bool {
	perm := st.Mode().Perm()
	if perm&0o027 != 0 {
		return false
	}
	if perm&0o040 == 0 {
		return true
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) != os.Getuid()
}

// readTokenFile reads the bearer token in path for the daemon (private
// set) or a client. The file holds the token and at most one trailing
// newline; the token is printable ASCII with no spaces (what an HTTP
// Authorization header carries unchanged), at least 16 characters. With
// private set, a file that group or others may read or write is refused
// (see [privateMode] for the one exception), as ssh refuses such a private key: the token is the daemon's only
// credential. Errors name the file and the offset of a bad byte, never
// the token; all of them are bad input (exit status 2) except a failed
// read.
func readTokenFile(flag, path string, private bool) (string, error) {
	f, st, err := openInput(path)
	if err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			return "", &ExitError{Code: 2, Err: fmt.Errorf("%s: %w", flag, err)}
		}
		return "", fmt.Errorf("read %s: %w", flag, err)
	}
	defer f.Close()
	if perm := st.Mode().Perm(); private && !privateMode(st) {
		return "", &ExitError{Code: 2, Err: fmt.Errorf("%s %s has mode %04o: group or others may read or write it; run chmod 600 on it (or 0440, owned by root, for a credential shared with the daemon's group)", flag, safeText(path), perm)}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", flag, quotePathError(err))
	}
	defer clear(b)
	if len(b) > maxTokenFileBytes {
		return "", &ExitError{Code: 2, Err: fmt.Errorf("%s %s is larger than %d bytes: not a token", flag, safeText(path), maxTokenFileBytes)}
	}
	tok := b
	if n := len(tok); n > 0 && tok[n-1] == '\n' {
		tok = tok[:n-1]
	}
	for i, c := range tok {
		if c <= ' ' || c >= 0x7f {
			what := "a control byte"
			switch {
			case c == '\n':
				what = "a newline"
			case c == ' ':
				what = "a space"
			case c >= 0x80:
				what = "a non-ASCII byte"
			}
			return "", &ExitError{Code: 2, Err: fmt.Errorf("%s %s has %s at offset %d: a token is one line of printable ASCII, at most one newline at the end", flag, safeText(path), what, i)}
		}
	}
	if len(tok) < 16 {
		return "", &ExitError{Code: 2, Err: fmt.Errorf("%s %s holds %d characters; use at least 16 random ones", flag, safeText(path), len(tok))}
	}
	return string(tok), nil
}
