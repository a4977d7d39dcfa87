// Package cli builds the vramseal command tree: the residency daemon, the
// operator commands and the audit commands.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// New returns the root command. Output goes to stdout and stderr; nothing
// here touches global state, so tests can run commands in parallel.
func New(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "vramseal",
		Short:         "Keep model shards resident in GPU memory under a cryptographic seal",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(debug.ReadBuildInfo()),
	}
	root.SetVersionTemplate("vramseal {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Each subcommand lives in its own file; add it here.
	root.AddCommand(newDigestCmd(), newSealCmd(), newServeCmd(), newShardCmd(), newModelCmd(), newCapacityCmd(), newResetCmd(), newDevicesCmd(), newAuditCmd())
	usageErrors(root)
	jsonFlags(root)
	return root
}

// jsonFlags gives every command but serve a --json flag: commands that
// print their own JSON define it; for the others (the audit commands) it
// makes a failure a JSON error object on stdout (see [Run]).
func jsonFlags(c *cobra.Command) {
	for _, sub := range c.Commands() {
		jsonFlags(sub)
	}
	if c.Runnable() && c.Name() != "serve" && c.Flags().Lookup("json") == nil {
		c.Flags().Bool("json", false, "on failure, print a JSON error object on stdout")
	}
}

// usageErrors makes bad flags, wrong argument counts, unknown commands and
// a missing subcommand exit with status 2 (bad input) in every command,
// like any other invalid input.
func usageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &ExitError{Code: 2, Err: err} })
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.SuggestionsMinimumDistance = 2
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				_ = cmd.Help()
				return &ExitError{Code: 2, Err: fmt.Errorf("%s needs a command", cmd.CommandPath())}
			}
			msg := fmt.Sprintf("unknown command %s for %q", safeText(args[0]), cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return &ExitError{Code: 2, Err: fmt.Errorf("%s (see %s --help)", msg, cmd.CommandPath())}
		}
	}
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageErrors(sub)
	}
}

// Run executes the command line args and returns the process exit status
// ([ExitCode]). A failure is printed on stderr and, when the command that
// failed was given --json, also on stdout as one compact JSON object
// {"error":{"code","message","exit_status"}}, so scripts read JSON on
// success and on failure alike.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := New(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	status := ExitCode(err)
	fmt.Fprintln(stderr, "vramseal:", terminalLine(err.Error()))
	if cmd != nil {
		if f := cmd.Flags().Lookup("json"); f != nil && f.Value.String() == "true" {
			_ = writeErrorJSON(stdout, err, status)
		}
	}
	return status
}

// ErrorJSON is the --json form of a failure.
type ErrorJSON struct {
	Error struct {
		// Code is the daemon's error code, or for a local failure the
		// class of its exit status (invalid_input, insufficient_vram,
		// integrity, conflict, interrupted, error).
		Code       string `json:"code"`
		Message    string `json:"message"`
		ExitStatus int    `json:"exit_status"`
	} `json:"error"`
}

var statusCodes = map[int]string{2: "invalid_input", 3: "insufficient_vram", 4: "integrity", 5: "conflict", 130: "interrupted"}

func writeErrorJSON(w io.Writer, err error, status int) error {
	var out ErrorJSON
	out.Error.Code, out.Error.Message, out.Error.ExitStatus = "error", err.Error(), status
	if c, ok := statusCodes[status]; ok {
		out.Error.Code = c
	}
	var ae *APIError
	if errors.As(err, &ae) {
		out.Error.Code = ae.Code
	}
	return json.NewEncoder(w).Encode(out)
}

// writeCompactJSON prints a JSON answer compact on one line, the one style
// of every --json output.
func writeCompactJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return fmt.Errorf("daemon sent malformed JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}
