package sluice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/subscribers"
)

// capturedLog is what a slog JSON handler wrote: one record per line.
type capturedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capturedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// logRecord is one decoded line.
type logRecord struct {
	Time       time.Time `json:"time"`
	Level      string    `json:"level"`
	Msg        string    `json:"msg"`
	Component  string    `json:"component"`
	Route      string    `json:"route"`
	Batch      string    `json:"batch"`
	Events     int       `json:"events"`
	Attempt    int       `json:"attempt"`
	Error      string    `json:"error"`
	Next       string    `json:"next"`
	Suppressed int       `json:"suppressed"`
	LastError  string    `json:"last_error"`
}

func (c *capturedLog) records(t *testing.T) []logRecord {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []logRecord
	for line := range strings.Lines(c.buf.String()) {
		var r logRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// syncPipeline starts a pipeline (in the synctest bubble of the test that calls it) with one route,
// route, that writes sink, logging into logs (debug and up).
func syncPipeline(t *testing.T, sink subscribers.Sink, logs *capturedLog, route Route) *Pipeline {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Postgres.Enabled = false
	cfg.Bus.RedeliveryDelay = 100 * time.Millisecond
	cfg.Bus.MaxRedeliveryDelay = time.Second
	cfg.Routes = []Route{route}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New(context.Background(), cfg, WithLogger(log), func(o *options) {
		o.sinkFor = func(Route) (subscribers.Sink, time.Duration) { return sink, 10 * time.Second }
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Storage is down for 95 s while events keep coming: hundreds of batch write attempts fail, and the
// route logs at most one failure line per failure_log_interval (10 s), and a summary once failures
// stop for an interval; each failure is counted exactly once in a line (a failure line counts itself
// and the failures it says were suppressed, a summary its suppressed). With a breaker that opens,
// each failed trial (one per 15 s cooldown) has a line of its own. Watermill's own line for each
// failed message is at debug, and nothing else is logged at ERROR. It runs in a synctest bubble, through the real router and its
// middleware (Throttle, Retry, Breaker, Writer): the clock is virtual, so the spacing of the lines is
// exact and nothing depends on the speed of the machine.
func TestFailedBatchWritesLogAtMostOneLinePerInterval(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int // breaker.failures
	}{
		{"breaker never opens", 1_000_000},
		{"breaker opens", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const interval, outage, cooldown = 10 * time.Second, 95 * time.Second, 15 * time.Second
				storageDown := errors.New("storage down")
				var down atomic.Bool
				var failed atomic.Int64
				down.Store(true)
				sink := &fakeSink{fail: func(int) error {
					if down.Load() {
						failed.Add(1)
						return storageDown
					}
					return nil
				}}
				logs := &capturedLog{}
				p := syncPipeline(t, sink, logs, Route{Name: "r", Sink: "blob", FailureLogInterval: interval,
					Chunk:    config.ChunkPolicy{MaxEvents: 10, MaxBytes: 1 << 20, Linger: 50 * time.Millisecond},
					Batch:    config.BatchPolicy{MaxEvents: 100, MaxBytes: 1 << 20, MaxWait: 200 * time.Millisecond, MaxConcurrentWrites: 2},
					Retry:    config.RetryPolicy{MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second},
					Throttle: config.ThrottlePolicy{EventsPerSecond: 1e6},
					Breaker:  config.Breaker{Failures: tc.failures, Cooldown: cooldown}})
				start := time.Now()
				published := 0
				for time.Since(start) < outage {
					if err := p.Publish(context.Background(), appEvent(published)); err != nil {
						t.Fatal(err)
					}
					published++
					time.Sleep(100 * time.Millisecond)
				}
				down.Store(false)
				for {
					if _, stored := sink.snapshot(); len(stored) == published {
						break
					}
					if time.Since(start) > outage+5*time.Minute {
						t.Fatal("the events were not all written 5 minutes (virtual) after the outage")
					}
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(2 * interval) // the summary of the last failures is due an interval after them
				if err := p.Close(context.Background()); err != nil {
					t.Fatal(err)
				}

				var lines, failureLines, summaries []logRecord
				counted, suppressedLines, watermillErrors := 0, 0, 0
				nexts := map[string]int{}
				for _, r := range logs.records(t) {
					switch {
					case r.Msg == "batch write failed":
						lines, failureLines = append(lines, r), append(failureLines, r)
						counted += 1 + r.Suppressed
						if r.Route != "r" || len(r.Batch) != 36 || r.Events <= 0 || r.Attempt < 1 || r.Attempt > 3 ||
							r.Error != storageDown.Error() {
							t.Errorf("failure line %+v: want route r, a batch id, its events, attempt 1-3 and the sink's error", r)
						}
						next, _, _ := strings.Cut(r.Next, " in ")
						nexts[next]++
					case r.Msg == "batch writes failed":
						lines, summaries = append(lines, r), append(summaries, r)
						counted += r.Suppressed
						if r.Route != "r" || r.Suppressed == 0 || r.LastError != storageDown.Error() {
							t.Errorf("summary line %+v: want route r, the count and the last error", r)
						}
					case r.Msg == handlerFailed && r.Level == "DEBUG":
						watermillErrors++
					case r.Level == "ERROR":
						t.Errorf("ERROR line %+v: the failure log's lines are the only ERROR lines", r)
					}
					if r.Suppressed > 0 {
						suppressedLines++
					}
				}
				t.Logf("%d failed write attempts of %d events, in %d log lines; next: %v; %d router lines at debug",
					failed.Load(), published, len(lines), nexts, watermillErrors)
				if int64(counted) != failed.Load() {
					t.Errorf("the lines count %d failures, want the %d failed write attempts", counted, failed.Load())
				}
				for _, kind := range [][]logRecord{failureLines, summaries} {
					for i := 1; i < len(kind); i++ {
						if gap := kind[i].Time.Sub(kind[i-1].Time); gap < interval {
							t.Errorf("%q lines %v and %v are %v apart, want at least %v", kind[i].Msg, kind[i-1].Time, kind[i].Time, gap, interval)
						}
					}
				}
				if suppressedLines == 0 {
					t.Error("no line reports suppressed failures")
				}
				if watermillErrors == 0 {
					t.Errorf("no %q line at debug: the router's line must be demoted, not lost", handlerFailed)
				}
				if tc.failures > 1000 {
					if failed.Load() < 10*int64(len(lines)) {
						t.Errorf("%d failures in %d lines: the test means many failures per line", failed.Load(), len(lines))
					}
					if nexts["retry"] == 0 || nexts["redelivered"] == 0 {
						t.Errorf("next: %v, want retries and redeliveries", nexts)
					}
				} else {
					// The first failure, then one failed trial per cooldown, each with its line.
					trials := int(outage / cooldown)
					if nexts["breaker open"] < trials-1 {
						t.Errorf("next: %v, want a line for each failed trial of the breaker (about %d)", nexts, trials)
					}
				}
			})
		})
	}
}
