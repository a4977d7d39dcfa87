// Package cli builds the vramseal command tree: the residency daemon, the
// operator commands and the audit commands.
package cli

import (
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
	return root
}
