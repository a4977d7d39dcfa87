package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/narration"
)

// DefaultListen is the daemon's default address: loopback, fixed port.
const DefaultListen = "127.0.0.1:7788"

// clientFlags are shared by every command that talks to the daemon.
type clientFlags struct {
	addr      string
	tokenFile string
	asJSON    bool
	timeout   time.Duration
	// long marks a command whose time grows with the shard (an upload):
	// its --timeout has no default limit. Set it before register.
	long bool
}

// DefaultTimeout bounds a client command that is not long (see
// clientFlags.long) unless --timeout says otherwise, so a daemon that
// accepts connections but never answers does not hang the terminal.
const DefaultTimeout = time.Minute

func (f *clientFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", envOr("VRAMSEAL_ADDR", "http://"+DefaultListen), "daemon URL (env VRAMSEAL_ADDR)")
	fl.StringVar(&f.tokenFile, "token-file", os.Getenv("VRAMSEAL_TOKEN_FILE"), "file holding the daemon's bearer token (env VRAMSEAL_TOKEN_FILE)")
	fl.BoolVar(&f.asJSON, "json", false, "print the daemon's JSON")
	def := DefaultTimeout
	if f.long {
		def = 0
	}
	fl.DurationVar(&f.timeout, "timeout", def, "give up after this long (0: no limit)")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// client calls the daemon's API.
type client struct {
	base  *url.URL
	token string
	http  *http.Client
	// header is sent with every request (set by a command before it calls).
	header http.Header
}

func (f *clientFlags) client() (*client, error) {
	addr := f.addr
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--addr %q is not a URL like http://127.0.0.1:7788", f.addr)
	}
	c := &client{base: u, http: &http.Client{Timeout: f.timeout, Transport: &narration.RoundTripper{}}}
	if f.tokenFile != "" {
		// A client's token file is not checked for its mode: refusing it
		// would not make the token secret again, and the daemon's is.
		if c.token, err = readTokenFile("--token-file", f.tokenFile, false); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// APIError is an error answer from the daemon.
type APIError struct {
	Status int
	server.ErrorDetail
}

// Error renders the daemon's answer with its code, retry hint and
// correlation ID.
func (e *APIError) Error() string {
	msg := e.Message
	if e.Retryable && e.RetryAfterSeconds > 0 {
		msg += fmt.Sprintf(" (retryable: try again in %d s)", e.RetryAfterSeconds)
	}
	if e.CorrelationID != "" {
		msg += " [correlation_id=" + e.CorrelationID + "]"
	}
	return fmt.Sprintf("daemon answered %d %s: %s", e.Status, e.Code, msg)
}

// do sends a request and decodes a JSON answer into out (when non-nil).
// The raw answer is returned too, for --json.
func (c *client) do(ctx context.Context, method, path string, query url.Values, contentType string, body io.Reader, size int64, out any) ([]byte, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("request to the daemon stopped: %w", ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach the daemon at %s (is `vramseal serve` running?): %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var eb server.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			return raw, &APIError{Status: resp.StatusCode, ErrorDetail: eb.Error}
		}
		return raw, &APIError{Status: resp.StatusCode, ErrorDetail: server.ErrorDetail{Code: "http", Message: strings.TrimSpace(string(raw))}}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("daemon sent malformed JSON: %w", err)
		}
	}
	return raw, nil
}

func (c *client) getJSON(ctx context.Context, path string, q url.Values, out any) ([]byte, error) {
	return c.do(ctx, http.MethodGet, path, q, "", nil, 0, out)
}

func (c *client) postJSON(ctx context.Context, path string, in, out any) ([]byte, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, path, nil, "application/json", bytes.NewReader(b), int64(len(b)), out)
}

// context applies --timeout to a command's context.
func (f *clientFlags) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if f.timeout > 0 {
		return context.WithTimeout(ctx, f.timeout)
	}
	return context.WithCancel(ctx)
}

// call runs one request against the daemon: it builds the client, applies
// --timeout, runs do, and prints the daemon's JSON with --json or calls
// human otherwise.
func (f *clientFlags) call(cmd *cobra.Command, do func(ctx context.Context, c *client) ([]byte, error), human func(w io.Writer) error) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	ctx, cancel := f.context(cmd)
	defer cancel()
	raw, err := do(ctx, c)
	if err != nil {
		return exitCodeFor(err)
	}
	if f.asJSON {
		return writeCompactJSON(cmd.OutOrStdout(), raw)
	}
	return human(cmd.OutOrStdout())
}

// exitCodeFor maps a daemon error to an exit status: 2 bad input (400,
// 404, 411, 413, 415), 3
// retryable (capacity), 4 integrity/policy/stopped, 5 conflict (the shard
// is attached, or its ID is taken), 1 otherwise.
func exitCodeFor(err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return err
	}
	code := 1
	switch {
	case ae.Status == 401:
		err = fmt.Errorf("%w (give the daemon's token with --token-file or VRAMSEAL_TOKEN_FILE)", err)
	case ae.Status == 400 || ae.Status == 404 || ae.Status == 411 || ae.Status == 413 || ae.Status == 415:
		code = 2
	case ae.Retryable || ae.Status == 507:
		code = 3
	case ae.Status == 409 && (ae.Code == server.CodeInUse || ae.Code == server.CodeExists):
		code = 5
	case ae.Status == 409:
		code = 4
	}
	return &ExitError{Code: code, Err: err}
}
