package sluice

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicelog/sluice/config"
)

// histogram returns the count and sum of the series of a histogram with the label given.
func histogram(t *testing.T, p *Pipeline, name, label, value string) (count uint64, sum float64) {
	t.Helper()
	families, err := p.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0, 0
}

// A batch whose first write fails opens the breaker (failures 1); its retry waits out the 30 s
// cooldown, then the trial write takes 1 s. sluice_sink_write_seconds has the two Write calls and
// nothing else (0 s + 1 s); the wait is in sluice_breaker_wait_seconds (one attempt that did not wait,
// one that waited the cooldown less the retry's backoff). In a synctest bubble: the clock is virtual,
// so the times are exact whatever the machine does.
func TestWriteSecondsLeaveOutTheBreakerWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const cooldown, writeTook = 30 * time.Second, time.Second
		sink := &fakeSink{fail: func(call int) error {
			if call == 1 {
				return errors.New("storage down")
			}
			time.Sleep(writeTook)
			return nil
		}}
		p := syncPipeline(t, sink, &capturedLog{}, Route{Name: "r", Sink: "blob",
			Chunk:   config.ChunkPolicy{MaxEvents: 1, MaxBytes: 1 << 20, Linger: time.Millisecond},
			Batch:   config.BatchPolicy{MaxEvents: 1, MaxBytes: 1 << 20, MaxWait: time.Millisecond, MaxConcurrentWrites: 1},
			Retry:   config.RetryPolicy{MaxAttempts: 2, InitialInterval: 10 * time.Millisecond, MaxInterval: 10 * time.Millisecond},
			Breaker: config.Breaker{Failures: 1, Cooldown: cooldown}})
		if err := p.Publish(context.Background(), appEvent(0)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			if _, stored := sink.snapshot(); len(stored) == 1 {
				break
			}
			if time.Since(start) > 10*time.Minute {
				t.Fatal("the event was not written within 10 minutes (virtual)")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n, s := histogram(t, p, "sluice_sink_write_seconds", "route", "r"); n != 2 || s != writeTook.Seconds() {
			t.Errorf("sluice_sink_write_seconds: %d observations of %vs in all, want 2 of %vs (the Write calls only)", n, s, writeTook.Seconds())
		}
		least := (cooldown - time.Second).Seconds()
		if n, s := histogram(t, p, "sluice_breaker_wait_seconds", "route", "r"); n != 2 || s < least || s > cooldown.Seconds() {
			t.Errorf("sluice_breaker_wait_seconds: %d observations of %vs in all, want 2 of %vs to %vs (the cooldown less the retry's backoff)",
				n, s, least, cooldown.Seconds())
		}
	})
}

// Every counter series a route can have exists at 0 from the start: an alert on a drop, a dead
// letter or a retry sees 0, not an absent series.
func TestCountersExistAtZeroFromTheStart(t *testing.T) {
	p := testPipeline(t, &fakeSink{}, nil)
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, series := range []string{
		`sluice_events_dropped_total{reason="queue_full",route="r"} 0`,
		`sluice_events_dropped_total{reason="closed",route=""} 0`,
		`sluice_dead_letters_total{reason="invalid_data",route="r"} 0`,
		`sluice_retries_total{route="r"} 0`,
		`sluice_batches_redelivered_total{route="r"} 0`,
		`sluice_sink_events_written_total{route="r",sink="fake"} 0`,
		`sluice_sink_write_errors_total{route="r",sink="fake"} 0`,
		`sluice_events_published_total{source="http"} 0`,
	} {
		if !strings.Contains(rec.Body.String(), series) {
			t.Errorf("no %s in /metrics at start", series)
		}
	}
}
