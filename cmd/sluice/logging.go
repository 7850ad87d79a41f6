package main

// The demo's request logging modes (its -logging flag) and profiles: what sluice-bench (the bench
// module) runs the demo with to compare sluice with no logging and with Echo's own request logger.
// The mode names and the request log's path are a contract with bench/server.go.

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
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/sluicelog/sluice/handlers"
	"github.com/sluicelog/sluice/internal/profiling"
)

// The request logging modes of the demo.
const (
	loggingSluice   = "sluice"    // sluice's middleware (the default)
	loggingOff      = "off"       // no request logging
	loggingEcho     = "echo"      // Echo's RequestLogger writing JSON through slog to io.Discard
	loggingEchoFile = "echo-file" // Echo's RequestLogger writing JSON lines to requestLogFile
)

// requestLogFile is where the demo with -logging echo-file writes its request log, in its working
// directory.
var requestLogFile = filepath.Join("sluice-data", "requests.ndjson")

// demoFlags are the demo's flags for sluice-bench: -logging, the request logging middleware ("sluice"
// unless the demo is compared with none, "off", with Echo's own request logger, "echo", or with Echo's
// request logger writing JSON lines to a file, "echo-file"), and the profiles it writes when it stops.
type demoFlags struct {
	logging    string
	cpuProfile string
	memProfile string
}

// flagDemo registers the demo's flags for sluice-bench when cmd is "demo".
func flagDemo(fs *flag.FlagSet, cmd string) *demoFlags {
	f := &demoFlags{logging: loggingSluice}
	if cmd != "demo" {
		return f
	}
	fs.Func("logging", "request logging: sluice, or for sluice-bench off, echo (Echo's request logger) or echo-file "+
		"(Echo's request logger writing JSON lines to "+requestLogFile+")", func(s string) error {
		switch s {
		case loggingSluice, loggingOff, loggingEcho, loggingEchoFile:
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
			heap <- profiling.WriteHeap(f.memProfile)
		}()
	}
	err := profiling.WithCPU(f.cpuProfile, run)
	if f.memProfile != "" && ctx.Err() != nil {
		err = errors.Join(err, <-heap)
	}
	return err
}

// demoLogging returns the demo's request logging middleware for mode: sluice's, none, Echo's
// RequestLogger writing JSON through slog to io.Discard, or Echo's RequestLogger writing JSON lines to
// a file (what a service without sluice would run), and what closes it once the server has finished its
// requests (nil when there is nothing to close).
func demoLogging(mode string, sluice echo.MiddlewareFunc) ([]echo.MiddlewareFunc, func() error, error) {
	switch mode {
	case loggingOff:
		return nil, nil, nil
	case loggingEcho:
		return []echo.MiddlewareFunc{echoRequestLogger()}, nil, nil
	case loggingEchoFile:
		l, err := openRequestLogFile(requestLogFile, requestLogFlushEvery)
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
func echoFileRequestLogger(l *requestLog) echo.MiddlewareFunc {
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
type requestLog struct {
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
func openRequestLogFile(path string, flushEvery time.Duration) (*requestLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	l := &requestLog{f: f, w: bufio.NewWriterSize(f, requestLogBuffer), stop: make(chan struct{}), flushed: make(chan struct{})}
	l.enc = json.NewEncoder(l.w)
	l.enc.SetEscapeHTML(false)
	go l.flushEvery(flushEvery)
	return l, nil
}

// log writes the line of a request: v, and the size of its body.
func (l *requestLog) log(v middleware.RequestLoggerValues, bytesIn int64) {
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

func (l *requestLog) flushEvery(period time.Duration) {
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
func (l *requestLog) Close() error {
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
