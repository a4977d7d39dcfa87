// Package cli builds the vramseal command tree: the residency daemon, the
// operator commands and the audit commands.
package cli

import (
	"fmt"
	"io"

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
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Each subcommand lives in its own file; add it here.
	root.AddCommand(newDigestCmd(), newSealCmd(), newServeCmd(), newShardCmd(), newCapacityCmd(), newResetCmd(), newDevicesCmd(), newAuditCmd())
	usageErrors(root)
	return root
}

// usageErrors makes bad flags, wrong argument counts, unknown commands and
// a missing subcommand exit with status 2 (bad input) in every command,
// like any other invalid input.
func usageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &ExitError{Code: 2, Err: err} })
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				_ = cmd.Help()
				return &ExitError{Code: 2, Err: fmt.Errorf("%s needs a command", cmd.CommandPath())}
			}
			return &ExitError{Code: 2, Err: fmt.Errorf("unknown command %q for %q (see %s --help)", args[0], cmd.CommandPath(), cmd.CommandPath())}
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
