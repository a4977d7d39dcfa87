// Command vramseal runs the residency daemon and the operator commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/vramseal/vramseal/internal/cli"
)

func main() {
	// The first Ctrl-C or SIGTERM cancels the command's context: every
	// long operation stops, and serve shuts down cleanly. Then the
	// default handling is back, so a second one ends the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	status := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(status)
}
