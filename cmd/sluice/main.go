// Command sluice runs sluice's demo service and its maintenance commands.
//
//	sluice demo      an Echo service with sluice embedded (see the README)
//	sluice migrate   apply the PostgreSQL schema migrations and print their status
//	sluice config    print the effective configuration (secrets masked) and every key
//
// Configuration comes from the embedded defaults, an optional YAML file (-config, or SLUICE_CONFIG),
// and SLUICE_* environment variables. Exit codes: 0 success; 1 the run failed or did not write
// everything it accepted; 2 bad usage or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/sluicelog/sluice/subscribers/blobsink/azurestore" // blob.connection_string: Azure Blob Storage
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: sluice <command> [-config FILE]

commands:
  demo      run the demo Echo service with sluice embedded (SLUICE_HTTP_ADDR, default 127.0.0.1:8080)
  migrate   apply the PostgreSQL schema migrations (SLUICE_POSTGRES_DSN) and print their status
  config    print the effective configuration, secrets masked, and the environment variable of every key

sluice-bench (cd bench && go run ./cmd/sluice-bench) measures sluice against the alternatives on this
machine: docs/BENCHMARKS.md.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", os.Getenv("SLUICE_CONFIG"), "YAML configuration file (also SLUICE_CONFIG)")
	demoFlags := flagDemo(fs, cmd)
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "demo":
		err = demoFlags.withProfiles(ctx, func() error { return demo(ctx, *configFile, demoFlags.logging, stdout, log) })
	case "migrate":
		err = migrate(ctx, *configFile, stdout)
	case "config":
		err = printConfig(*configFile, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		var ce *configError
		if errors.As(err, &ce) {
			return 2
		}
		return 1
	}
	return 0
}

// configError marks a configuration that failed to load or validate (exit code 2).
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }
