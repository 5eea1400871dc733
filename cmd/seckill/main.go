// Command seckill runs the parts of the flash-sale system: the backend
// (purchase API and outbox relay), the worker (RabbitMQ to PostgreSQL) and
// the operator tools (reconcile).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if code, ok := err.(exitCode); ok {
			os.Exit(int(code))
		}
		fmt.Fprintln(os.Stderr, "seckill:", err)
		os.Exit(1)
	}
}

// exitCode is an error that only sets the exit status (the command already
// said why).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run builds the command tree and runs it; tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:   "seckill",
		Short: "A flash-sale system: sell every unit exactly once, to real people, under a flood",
		Long: `seckill sells a few hundred units to thousands of simultaneous buyers.

The backend takes a unit atomically in Redis and leaves the order in a Redis
outbox; its relay moves the outbox to RabbitMQ with publisher confirms; the
worker stores orders in PostgreSQL and only then acknowledges them.

Every setting is a flag or an environment variable (SECKILL_...); flags win.`,
		Example: `  seckill dev                              # everything in one process, with a demo sale (make run)
  seckill dev --help                       # its flags; every command has --help
  seckill backend --listen 127.0.0.1:8090  # the real stack, part by part (make up starts them all)
  seckill worker
  seckill edge --config configs/edge.yaml
  seckill reconcile --settle 5s
  seckill lab run configs/lab/small.yaml   # honest users and bots against a running edge`,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// The environment and config files are applied, strictly, before any
	// command runs (config.go).
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error { return resolveSettings(c.Flags(), getenv) }
	root.SetFlagErrorFunc(flagError)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		withConfigFile(backendCmd(getenv, stdout, stderr), getenv),
		withConfigFile(workerCmd(getenv, stdout, stderr), getenv),
		withConfigFile(relayCmd(getenv, stdout, stderr), getenv),
		reconcileCmd(getenv, stdout, stderr),
		migrateCmd(getenv, stdout, stderr),
		withConfigFile(edgeCmd(getenv, stdout, stderr), getenv),
		devCmd(getenv, stdout, stderr),
		benchCmd(getenv, stdout, stderr),
		configCmd(getenv, stdout, stderr),
		labCmd(getenv, stdout, stderr),
		solveCmd(os.Stdin, stdout),
		hasherCmd(os.Stdin, stdout),
	)
	return root.ExecuteContext(ctx)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
