package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/sluicelog/sluice/handlers"
	"github.com/sluicelog/sluice/internal/bench"
)

// benchFlags are the flags of `sluice bench`.
type benchFlags struct {
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
}

// flagBench registers the bench flags on fs when cmd is "bench".
func flagBench(fs *flag.FlagSet, cmd string) *benchFlags {
	f := &benchFlags{}
	if cmd != "bench" {
		return f
	}
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
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cfg := bench.Config{
			Quick: f.quick, PostgresDSN: f.postgres, Azurite: f.azurite, ServerBinary: self,
			ServerProfileDir: f.serverProfiles, ServerEnv: f.demoEnv, OverloadDuration: f.duration, OverloadRate: f.rate, Progress: stderr,
		}
		if f.scenarios != "" {
			cfg.Scenarios = strings.Split(f.scenarios, ",")
		}
		err = withCPUProfile(f.cpuProfile, func() error {
			res, runErr = bench.Run(ctx, cfg)
			return nil
		})
		if err != nil {
			return err
		}
		if res == nil {
			return &configError{runErr}
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

// demoFlags are the demo's flags for sluice bench: -logging, the request logging middleware ("sluice"
// unless the demo is compared with none, "off", with Echo's own request logger, "echo", or with Echo's
// request logger writing JSON lines to a file, "echo-file"), and the profiles it writes when it stops.
type demoFlags struct {
	logging    string
	cpuProfile string
	memProfile string
}

// flagDemo registers the demo's flags for sluice bench when cmd is "demo".
func flagDemo(fs *flag.FlagSet, cmd string) *demoFlags {
	f := &demoFlags{logging: bench.LoggingSluice}
	if cmd != "demo" {
		return f
	}
	fs.Func("logging", "request logging: sluice, or for sluice bench off, echo (Echo's request logger) or echo-file "+
		"(Echo's request logger writing JSON lines to "+bench.RequestLogFile+")", func(s string) error {
		switch s {
		case bench.LoggingSluice, bench.LoggingOff, bench.LoggingEcho, bench.LoggingEchoFile:
			f.logging = s
			return nil
		}
		return fmt.Errorf("want sluice, off, echo or echo-file")
	})
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the demo to `file` when it stops")
	fs.StringVar(&f.memProfile, "memprofile", "", "write a heap profile of the demo to `file` when its shutdown begins")
	return f
}

// withProfiles runs run (the demo) with the profiles f asks for: the CPU over the whole run, and the
// heap when ctx ends, as the shutdown begins: what the demo holds under load, before it flushes.
func (f *demoFlags) withProfiles(ctx context.Context, run func() error) error {
	heap := make(chan error, 1)
	if f.memProfile != "" {
		go func() {
			<-ctx.Done()
			heap <- writeHeapProfile(f.memProfile)
		}()
	}
	err := withCPUProfile(f.cpuProfile, run)
	if f.memProfile != "" && ctx.Err() != nil {
		err = errors.Join(err, <-heap)
	}
	return err
}

func writeHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC() // the profile shows the heap as of the last collection
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}

// withCPUProfile runs run, profiling the CPU into file when file is not empty.
func withCPUProfile(file string, run func() error) error {
	if file == "" {
		return run()
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	err = run()
	pprof.StopCPUProfile()
	return errors.Join(err, f.Close())
}

// demoLogging returns the demo's request logging middleware for mode: sluice's, none, Echo's
// RequestLogger writing JSON through slog to io.Discard, or Echo's RequestLogger writing JSON lines to
// a file (what a service without sluice would run), and what closes it once the server has finished its
// requests (nil when there is nothing to close).
func demoLogging(mode string, sluice echo.MiddlewareFunc) ([]echo.MiddlewareFunc, func() error, error) {
	switch mode {
	case bench.LoggingOff:
		return nil, nil, nil
	case bench.LoggingEcho:
		return []echo.MiddlewareFunc{echoRequestLogger()}, nil, nil
	case bench.LoggingEchoFile:
		l, err := openRequestLogFile(bench.RequestLogFile, requestLogFlushEvery)
		if err != nil {
			return nil, nil, err
		}
		return []echo.MiddlewareFunc{echoFileRequestLogger(l)}, l.Close, nil
	}
	return []echo.MiddlewareFunc{sluice}, nil, nil
}

func echoRequestLogger() echo.MiddlewareFunc {
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogStatus: true, LogURI: true, LogMethod: true, LogLatency: true, LogRemoteIP: true, LogRequestID: true,
		LogUserAgent: true, LogRoutePath: true, LogError: true, HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			attrs := []slog.Attr{
				slog.String("method", v.Method), slog.String("uri", v.URI), slog.String("route", v.RoutePath),
				slog.Int("status", v.Status), slog.Duration("latency", v.Latency), slog.String("remote_ip", v.RemoteIP),
				slog.String("request_id", v.RequestID), slog.String("user_agent", v.UserAgent),
			}
			if v.Error != nil {
				attrs = append(attrs, slog.String("error", v.Error.Error()))
			}
			logger.LogAttrs(c.Request().Context(), slog.LevelInfo, "request", attrs...)
			return nil
		},
	})
}

// echoFileRequestLogger is Echo's RequestLogger writing one JSON line per request to l: the fields
// sluice stores of a request (not its headers or bodies), for a sidecar to ship. Like sluice, it leaves
// the ops endpoints out.
func echoFileRequestLogger(l *requestLogFile) echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		Skipper:   handlers.IsOps,
		LogStatus: true, LogURI: true, LogURIPath: true, LogMethod: true, LogLatency: true, LogRemoteIP: true,
		LogRequestID: true, LogUserAgent: true, LogRoutePath: true, LogError: true, LogResponseSize: true,
		HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			l.log(v, max(c.Request().ContentLength, 0)) // -1: unknown
			// A write error fails Close, not the request: the request itself went well.
			return nil
		},
	})
}

// requestLogFlushEvery is how often the request log file's buffer is flushed: a sidecar tailing it sees
// a request's line within about that long.
const requestLogFlushEvery = time.Second

// requestLogBuffer is the size of the request log file's buffer: a write(2) every 200 or so lines.
const requestLogBuffer = 64 << 10

// requestLogFile is a request log file, one JSON line per request, as a team whose logs a sidecar
// (Vector, Fluent Bit) tails and ships would write it: each line encoded under a mutex into a buffered
// writer, flushed every requestLogFlushEvery and when it is closed.
type requestLogFile struct {
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	enc  *json.Encoder // onto w
	line requestLine   // the line being encoded, reused
	err  error         // the first write error

	stop      chan struct{}
	flushed   chan struct{} // closed when the flushing goroutine returned
	closeOnce sync.Once
	closeErr  error
}

// requestLine is a line of the request log file.
type requestLine struct {
	Time      time.Time `json:"time"` // the request's start, UTC
	Level     string    `json:"level"`
	ID        string    `json:"id"` // UUIDv7
	RequestID string    `json:"request_id"`
	Method    string    `json:"method"`
	URI       string    `json:"uri"`
	Path      string    `json:"path"`
	Route     string    `json:"route"`
	Status    int       `json:"status"`
	LatencyMS float64   `json:"latency_ms"`
	RemoteIP  string    `json:"remote_ip"`
	UserAgent string    `json:"user_agent,omitempty"`
	BytesIn   int64     `json:"bytes_in"`
	BytesOut  int64     `json:"bytes_out"`
	Error     string    `json:"error,omitempty"`
}

// openRequestLogFile opens (appends to) the request log file at path, making its directory, and
// flushes it every flushEvery until it is closed.
func openRequestLogFile(path string, flushEvery time.Duration) (*requestLogFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	l := &requestLogFile{f: f, w: bufio.NewWriterSize(f, requestLogBuffer), stop: make(chan struct{}), flushed: make(chan struct{})}
	l.enc = json.NewEncoder(l.w)
	l.enc.SetEscapeHTML(false)
	go l.flushEvery(flushEvery)
	return l, nil
}

// log writes the line of a request: v, and the size of its body.
func (l *requestLogFile) log(v middleware.RequestLoggerValues, bytesIn int64) {
	id := uuid.Must(uuid.NewV7()).String()
	requestID := v.RequestID
	if requestID == "" {
		requestID = id // as sluice does when the request has none
	}
	var errText string
	if v.Error != nil {
		errText = v.Error.Error()
	}
	level := "INFO"
	switch {
	case v.Status >= 500:
		level = "ERROR"
	case v.Status >= 400:
		level = "WARN"
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.line = requestLine{
		Time: v.StartTime.UTC(), Level: level, ID: id, RequestID: requestID, Method: v.Method, URI: v.URI,
		Path: v.URIPath, Route: v.RoutePath, Status: v.Status, LatencyMS: float64(v.Latency) / float64(time.Millisecond),
		RemoteIP: v.RemoteIP, UserAgent: v.UserAgent, BytesIn: bytesIn, BytesOut: v.ResponseSize, Error: errText,
	}
	if err := l.enc.Encode(&l.line); err != nil && l.err == nil {
		l.err = err
	}
}

func (l *requestLogFile) flushEvery(period time.Duration) {
	defer close(l.flushed)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if err := l.w.Flush(); err != nil && l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
		}
	}
}

// Close flushes what is buffered and closes the file. It returns the first error of any write; call it
// once no request is logged any more (again: the same result).
func (l *requestLogFile) Close() error {
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.flushed
		l.mu.Lock()
		defer l.mu.Unlock()
		if err := l.w.Flush(); err != nil && l.err == nil {
			l.err = err
		}
		if err := l.f.Close(); err != nil && l.err == nil {
			l.err = err
		}
		if l.err != nil {
			l.closeErr = fmt.Errorf("request log %s: %w", l.f.Name(), l.err)
		}
	})
	return l.closeErr
}
