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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	status := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(status)
}
