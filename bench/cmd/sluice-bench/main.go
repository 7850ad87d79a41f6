// Command sluice-bench measures sluice, in one run on one machine, against what a team would otherwise
// ship: raw inserts, Echo's request logger, a file shipped by a sidecar (docs/BENCHMARKS.md). It lives
// in a module of its own, so that its load generator and plotting libraries stay out of the library's
// and the sluice binary's dependencies.
//
//	cd bench && go run ./cmd/sluice-bench -quick
//
// Exit codes: 0 success; 1 a scenario failed; 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluicelog/sluice/bench"
	"github.com/sluicelog/sluice/internal/profiling"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := flagBench(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runBench(ctx, f, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "sluice-bench: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError marks a run that could not start with what it was given (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// sluiceBinary returns the sluice binary to measure: path when given, else one built now from the
// checkout this module belongs to (its go.mod replaces the sluice module with ..), and what removes it.
func sluiceBinary(ctx context.Context, path string, progress io.Writer) (string, func(), error) {
	if path != "" {
		abs, err := filepath.Abs(path)
		return abs, func() {}, err
	}
	dir, err := os.MkdirTemp("", "sluice-bench")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "sluice")
	fmt.Fprintln(progress, "building the sluice binary to measure (-sluice to give one)")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/sluicelog/sluice/cmd/sluice")
	build.Stdout, build.Stderr = progress, progress
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build sluice: %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// benchFlags are the flags of `sluice-bench`.
type benchFlags struct {
	sluice         string
	quick          bool
	scenarios      string
	jsonFile       string
	plotFile       string
	from           string
	postgres       string
	azurite        string
	duration       time.Duration
	rate           int
	cpuProfile     string
	serverProfiles string
	demoEnv        map[string]string
	busDrivers     string
	busURLs        map[string]string
	busWorkers     int
	busRuns        int
}

// flagBench registers the flags on fs.
func flagBench(fs *flag.FlagSet) *benchFlags {
	f := &benchFlags{}
	fs.StringVar(&f.sluice, "sluice", "", "the `sluice` binary whose demo is measured (default: built from this checkout with go build)")
	fs.BoolVar(&f.quick, "quick", false, "tiny sizes and short steps: every scenario in under a minute (a smoke test; the figures mean little)")
	fs.StringVar(&f.scenarios, "scenarios", strings.Join(bench.Scenarios, ","), "the scenarios to run, comma-separated")
	fs.StringVar(&f.jsonFile, "json", "", "write every figure to this JSON `file` (stable keys)")
	fs.StringVar(&f.plotFile, "plot", "", "draw the PNG plot into this `file` (default: the -json file with .png, else sluice-bench.png)")
	fs.StringVar(&f.from, "from", "", "run nothing: print the table and draw the plot of this JSON `file` from an earlier run")
	fs.StringVar(&f.postgres, "postgres", envOr("SLUICE_TEST_POSTGRES_DSN", bench.DefaultPostgresDSN),
		"PostgreSQL `DSN` of a user that may create databases (also SLUICE_TEST_POSTGRES_DSN)")
	fs.StringVar(&f.azurite, "azurite", os.Getenv("SLUICE_TEST_AZURITE"),
		"Azurite connection string (also SLUICE_TEST_AZURITE, which eval \"$(scripts/azurite.sh start)\" sets)")
	fs.DurationVar(&f.duration, "overload-duration", 0, "how long the overload scenario keeps storage down (default 60s, 3s with -quick)")
	fs.IntVar(&f.rate, "overload-rate", 0, "requests/s of the overload scenario (default: the highest rate the http scenario found sluice to sustain, else 5000)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the sink scenarios run in it) to `file`")
	fs.Func("demo-env", "add `KEY=VALUE` to every demo's environment, to measure another configuration (repeatable)", func(kv string) error {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE")
		}
		if f.demoEnv == nil {
			f.demoEnv = map[string]string{}
		}
		f.demoEnv[k] = v
		return nil
	})
	fs.StringVar(&f.busDrivers, "bus-drivers", "", "the buses the bus scenario measures, comma-separated: memory and broker drivers (default: memory and every registered driver)")
	fs.Func("bus-url", "the bus.url of a broker driver for the bus scenario, as `DRIVER=URL` (repeatable; default SLUICE_TEST_<DRIVER>_URL, else this machine kind's; kafka: a kfake process, postgres: a fresh database)", func(kv string) error {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return fmt.Errorf("want DRIVER=URL")
		}
		if f.busURLs == nil {
			f.busURLs = map[string]string{}
		}
		f.busURLs[k] = v
		return nil
	})
	fs.IntVar(&f.busWorkers, "bus-workers", bench.DefaultBusWorkers, "workers of the bus scenario (and subscriptions of its stock design)")
	fs.IntVar(&f.busRuns, "bus-runs", 1, "rounds of the bus scenario over every bus: each bus's median run is reported")
	fs.StringVar(&f.serverProfiles, "server-profiles", "", "write a CPU and a heap profile of each demo process into `dir` (demo-MODE.cpu.pprof, demo-MODE.heap.pprof)")
	return f
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// runBench runs the benchmark (or re-renders an earlier one), prints the results table to stdout and
// the progress to stderr, and writes the JSON and the plot.
func runBench(ctx context.Context, f *benchFlags, stdout, stderr io.Writer) error {
	plotFile := f.plotFile
	if plotFile == "" {
		plotFile = "sluice-bench.png"
		if json := f.jsonFile; json != "" {
			plotFile = strings.TrimSuffix(json, ".json") + ".png"
		}
	}
	var (
		res    *bench.Results
		runErr error
	)
	if f.from != "" {
		r, err := bench.ReadJSON(f.from)
		if err != nil {
			return err
		}
		res = r
	} else {
		server, cleanup, err := sluiceBinary(ctx, f.sluice, stderr)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg := bench.Config{
			Quick: f.quick, PostgresDSN: f.postgres, Azurite: f.azurite, ServerBinary: server,
			ServerProfileDir: f.serverProfiles, ServerEnv: f.demoEnv, OverloadDuration: f.duration, OverloadRate: f.rate, Progress: stderr,
		}
		if f.scenarios != "" {
			cfg.Scenarios = strings.Split(f.scenarios, ",")
		}
		if f.busDrivers != "" {
			cfg.BusDrivers = strings.Split(f.busDrivers, ",")
		}
		cfg.BusURLs, cfg.BusWorkers, cfg.BusRuns = f.busURLs, f.busWorkers, f.busRuns
		err = profiling.WithCPU(f.cpuProfile, func() error {
			res, runErr = bench.Run(ctx, cfg)
			return nil
		})
		if err != nil {
			return err
		}
		if res == nil {
			return &usageError{runErr}
		}
	}
	res.WriteTable(stdout)
	if f.jsonFile != "" {
		if err := res.WriteJSON(f.jsonFile); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s\n", f.jsonFile)
	}
	if err := res.WritePlot(plotFile); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	fmt.Fprintf(stderr, "wrote %s\n", plotFile)
	return runErr
}
