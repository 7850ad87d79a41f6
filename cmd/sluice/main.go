// Command sluice runs sluice's demo service and its maintenance commands.
//
//	sluice demo      an Echo service with sluice embedded (see the README)
//	sluice worker    write what web nodes forward to a broker (bus.driver), with /metrics and /readyz
//	sluice migrate   apply the PostgreSQL schema migrations and print their status
//	sluice logs      read the logs back from PostgreSQL or the archive, filtered; follow new ones
//	sluice prune     remove what is older than the retention, in PostgreSQL and the archive
//	sluice config    print the effective configuration (secrets masked) and every key
//	sluice version   print the version and the commit it was built from
//	sluice help      print the commands, or a command's flags (also sluice COMMAND -h)
//
// Global flags (-config) go before or after the command.
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
	"runtime/debug"
	"strings"
	"syscall"

	_ "github.com/sluicelog/sluice/brokers/all"                     // bus.driver: every broker driver
	_ "github.com/sluicelog/sluice/subscribers/blobsink/azurestore" // blob.connection_string: Azure Blob Storage
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commands are sluice's commands, in the order help lists them.
var commands = []struct{ name, summary string }{
	{"demo", "run the demo Echo service with sluice embedded (SLUICE_HTTP_ADDR, default 127.0.0.1:8080)"},
	{"worker", "write the events that web nodes forward to the broker (bus.driver, bus.url) to the routes' sinks; /metrics, /readyz on SLUICE_ADMIN_ADDR"},
	{"migrate", "apply the PostgreSQL schema migrations (SLUICE_POSTGRES_DSN) and print their status"},
	{"logs", "read the logs back from PostgreSQL (or the archive: --archive), filtered; -f follows new ones. " +
		"Exit 0 found, 1 nothing matched, 2 bad usage or an error"},
	{"prune", "remove what is older than the retention (postgres.retention, blob.retention) and print it; -dry-run"},
	{"config", "print the effective configuration, secrets masked, and the environment variable of every key"},
	{"version", "print the version and the commit this binary was built from"},
	{"help", "print this, or a command's flags: sluice help COMMAND (or sluice COMMAND -h)"},
}

func usage() string {
	var b strings.Builder
	b.WriteString("usage: sluice [-config FILE] <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.summary)
	}
	b.WriteString(`
Configuration: the embedded defaults, then the YAML file of -config (or SLUICE_CONFIG), then SLUICE_*
environment variables (every key has one: sluice config lists them).
Exit codes: 0 success; 1 the run failed or did not write everything it accepted; 2 bad usage or
configuration.

sluice-bench (cd bench && go run ./cmd/sluice-bench) measures sluice against the alternatives on this
machine: docs/BENCHMARKS.md.
`)
	return b.String()
}

// newFlags returns the flag set of cmd: the global flags, and the command's own.
func newFlags(cmd string, stderr io.Writer) (*flag.FlagSet, *string, *demoFlags, *logsFlags) {
	fs := flag.NewFlagSet("sluice "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", os.Getenv("SLUICE_CONFIG"), "YAML configuration `file` (also SLUICE_CONFIG)")
	demo := flagDemo(fs, cmd)
	logsFlags := flagLogs(fs, cmd)
	flagPrune(fs, cmd)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sluice %s [flags]\n\n", cmd)
		for _, c := range commands {
			if c.name == cmd {
				fmt.Fprintf(fs.Output(), "%s\n\nflags:\n", c.summary)
			}
		}
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\nEvery configuration key also has a SLUICE_* environment variable: sluice config lists them.")
	}
	return fs, configFile, demo, logsFlags
}

func known(cmd string) bool {
	for _, c := range commands {
		if c.name == cmd {
			return true
		}
	}
	return false
}

func run(args []string, stdout, stderr io.Writer) int {
	// Global flags before the command: sluice -config x.yaml demo.
	global := flag.NewFlagSet("sluice", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	globalConfig := global.String("config", "", "")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage())
			return 0
		}
		fmt.Fprintf(stderr, "sluice: %v\n\n%s", err, usage())
		return 2
	}
	args = global.Args()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	cmd, rest := args[0], args[1:]
	if !known(cmd) {
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage())
		return 2
	}
	if cmd == "help" {
		if len(rest) == 1 && known(rest[0]) && rest[0] != "help" {
			fs, _, _, _ := newFlags(rest[0], stdout)
			fs.Usage()
			return 0
		}
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "sluice help: unknown command %q\n\n%s", strings.Join(rest, " "), usage())
			return 2
		}
		fmt.Fprint(stdout, usage())
		return 0
	}
	fs, configFile, demoFlags, logsFlags := newFlags(cmd, stderr)
	fs.SetOutput(stdout) // -h prints to stdout and exits 0; errors go to stderr below
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "sluice %s: %v (sluice %s -h lists the flags)\n", cmd, err, cmd)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice %s: unexpected arguments %q (sluice %s -h lists the flags)\n", cmd, fs.Args(), cmd)
		return 2
	}
	if *globalConfig != "" && *configFile == os.Getenv("SLUICE_CONFIG") {
		*configFile = *globalConfig // a -config after the command wins over one before it
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "demo":
		err = demoFlags.withProfiles(ctx, func() error { return demo(ctx, *configFile, demoFlags.logging, stdout, log) })
	case "worker":
		err = worker(ctx, *configFile, stdout, log)
	case "migrate":
		err = migrate(ctx, *configFile, stdout)
	case "logs":
		err = logs(ctx, *configFile, logsFlags, stdout, stderr)
	case "prune":
		err = prune(ctx, *configFile, fs, stdout, log)
	case "config":
		err = printConfig(*configFile, stdout)
	case "version":
		fmt.Fprintln(stdout, version())
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		var ce *configError
		if errors.As(err, &ce) {
			return 2
		}
		if le := (*logsExit)(nil); errors.As(err, &le) {
			return le.code
		}
		return 1
	}
	return 0
}

// version says which sluice this is: the module version (a tag, or (devel) for a build from a
// checkout), the commit and whether the tree had changes, and the Go version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "sluice (no build information)"
	}
	v := "sluice " + bi.Main.Version
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v += ", commit " + rev
		if settings["vcs.modified"] == "true" {
			v += " (modified)"
		}
		if t := settings["vcs.time"]; t != "" {
			v += ", " + t
		}
	}
	return v + ", " + bi.GoVersion
}

// configError marks a configuration that failed to load or validate (exit code 2).
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }
