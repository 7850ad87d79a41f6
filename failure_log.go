package sluice

import (
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

// failureLog is a route's log of failed batch writes: one line per failed write attempt, with the
// route, the batch (its id and events), the attempt, the error and what happens next (a retry and
// when, the breaker open, or the batch redelivered: handed out again later), and at most one such
// line per interval (the route's failure_log_interval). A failure less than an interval after the
// route's last failure line is counted instead, and the next line says how many were not logged
// (suppressed).
// When the failures stop for an interval before a failure line has reported them, a summary line
// does. So however many of its batches fail, a route logs at most one failure line per interval, and
// one summary after each spell of failures (summaries too are an interval apart at least); every
// failure is counted in one line: a failure line counts itself and its suppressed, a summary its
// suppressed. A rare failure (a breaker's trial every cooldown) has a line of its own.
//
// It is the one place where a failed write is logged: Watermill's Retry tells it of each retry (the
// Retry of each batch logs into that batch's batchAttempts), and the router's own line for a failed
// message is demoted to debug (routerLogger). Breaker state changes are logged apart (they are rare).
type failureLog struct {
	route    string
	interval time.Duration
	log      *slog.Logger
	breaker  *Breaker

	mu         sync.Mutex
	last       time.Time   // when the last failure line was logged; zero before the first
	suppressed int         // failures not logged since the last line (failure or summary)
	lastErr    error       // the last of them
	summary    *time.Timer // logs the suppressed failures an interval after the last of them
}

func newFailureLog(route string, interval time.Duration, log *slog.Logger, breaker *Breaker) *failureLog {
	return &failureLog{route: route, interval: interval, log: log, breaker: breaker}
}

// failedAttempt is one failed write attempt of a batch, and what happens next.
type failedAttempt struct {
	batch   string
	events  int
	attempt int // 1 for the first attempt of the batch message
	err     error
	next    string // "retry in 180ms", "breaker open" or "redelivered"
}

// failed logs a failed attempt, or counts it when the route's last failure line is less than an
// interval old.
func (f *failureLog) failed(a failedAttempt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if !f.last.IsZero() && now.Sub(f.last) < f.interval {
		f.suppressed++
		f.lastErr = a.err
		// Due an interval after the last failure: while failures go on, the next failure line
		// reports the count; once they stop, the summary does.
		if f.summary == nil {
			f.summary = time.AfterFunc(f.interval, f.flush)
		} else {
			f.summary.Reset(f.interval)
		}
		return
	}
	if f.summary != nil {
		f.summary.Stop()
	}
	f.log.Error("batch write failed", "route", f.route, "batch", a.batch, "events", a.events, "attempt", a.attempt,
		"error", a.err, "next", a.next, "suppressed", f.suppressed)
	f.last, f.suppressed, f.lastErr = now, 0, nil
}

// flush logs the failures not logged yet, if any, in one summary line.
func (f *failureLog) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.suppressed == 0 {
		return
	}
	f.log.Error("batch writes failed", "route", f.route, "suppressed", f.suppressed, "last_error", f.lastErr,
		"breaker", f.breaker.State().String())
	f.suppressed, f.lastErr = 0, nil
}

// close logs the failures not logged yet at once: the pipeline is closing, no line is due later.
func (f *failureLog) close() {
	f.mu.Lock()
	if f.summary != nil {
		f.summary.Stop()
	}
	f.mu.Unlock()
	f.flush()
}

// Retry returns Watermill's Retry middleware (nothing when retry is nil) with each failed write
// attempt of the handler it wraps reported to the failure log once what comes next is known: a retry
// (Retry announces it, with its wait, to its Logger: the batch's batchAttempts), or the end of the
// retries (the batch message is nacked, and the batch is handed out again later: by its batch
// subscriber, or by the bus or broker its one chunk came from). Put it where Retry goes,
// outside the Breaker: an attempt that ends while it waits for the breaker (its context ended) is not
// a failed write and is not reported, nor is one whose batch message's context ended (shutdown).
func (f *failureLog) Retry(retry *middleware.Retry) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			b := &batchAttempts{f: f, msg: msg}
			run := func(msg *message.Message) ([]*message.Message, error) {
				b.n++
				msgs, err := h(msg)
				b.failed = nil
				if err != nil && !errors.Is(err, ErrBreakerOpen) && msg.Context().Err() == nil {
					b.failed = err
				}
				return msgs, err
			}
			if retry != nil {
				r := *retry
				r.Logger = b
				run = r.Middleware(run)
			}
			msgs, err := run(msg)
			b.report("redelivered") // when the last attempt failed
			return msgs, err
		}
	}
}

// batchAttempts follows one batch message through its retries. It is the Logger of that message's
// Watermill Retry, which logs only to announce a retry (Error, with the wait in the field wait_time,
// message/router/middleware/retry.go): the attempt before has failed, and that is when it is
// reported, with "retry in" the wait.
type batchAttempts struct {
	f      *failureLog
	msg    *message.Message
	n      int   // attempts so far
	failed error // the last attempt's error, not reported yet
}

func (b *batchAttempts) report(next string) {
	err := b.failed
	if err == nil {
		return
	}
	b.failed = nil
	a := failedAttempt{batch: b.msg.UUID, attempt: b.n, err: err, next: next}
	var we *subscribers.WriteError
	if errors.As(err, &we) {
		a.batch, a.events, a.err = we.Batch.String(), we.Events, we.Err
	} else {
		a.events, _ = strconv.Atoi(b.msg.Metadata.Get(event.MetadataEvents))
	}
	if b.f.breaker.Open() {
		a.next = "breaker open" // the retry, or the redelivered batch, waits for its cooldown
	}
	b.f.failed(a)
}

// Error is Retry's announcement of a retry.
func (b *batchAttempts) Error(_ string, _ error, fields watermill.LogFields) {
	next := "retry"
	if d, ok := fields["wait_time"].(time.Duration); ok {
		next = "retry in " + d.Round(time.Millisecond).String()
	}
	b.report(next)
}

func (b *batchAttempts) Info(string, watermill.LogFields)                 {}
func (b *batchAttempts) Debug(string, watermill.LogFields)                {}
func (b *batchAttempts) Trace(string, watermill.LogFields)                {}
func (b *batchAttempts) With(watermill.LogFields) watermill.LoggerAdapter { return b }

// routerLogger is the logger adapter of the router and the bus: Watermill's lines, with its Info
// lines (a handler starts, the router closes) at debug, and the router's ERROR "Handler returned
// error" (message/router.go: one per failed batch message, which the route's failure log has
// reported) at debug too. Every other ERROR (a handler's panic, a subscriber that does not close, a
// bus closed with undelivered messages) stays an ERROR.
//
// At shutdown the pipeline ends the routes' subscriptions before it closes the router, so the
// router's ERROR "All handlers stopped, closing router" is expected then: it is at debug while the
// pipeline is closing (closing), an ERROR at any other time.
type routerLogger struct {
	watermill.LoggerAdapter
	closing *atomic.Bool
}

// The messages of the router's lines for a handler's error, and for every handler stopped.
const (
	handlerFailed   = "Handler returned error"
	handlersStopped = "All handlers stopped, closing router"
)

func newRouterLogger(l *slog.Logger, closing *atomic.Bool) routerLogger {
	return routerLogger{watermill.NewSlogLoggerWithLevelMapping(l, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}), closing}
}

func (l routerLogger) Error(msg string, err error, fields watermill.LogFields) {
	if msg == handlerFailed || (msg == handlersStopped && l.closing != nil && l.closing.Load()) {
		l.Debug(msg, fields.Add(watermill.LogFields{"error": err}))
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l routerLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return routerLogger{l.LoggerAdapter.With(fields), l.closing}
}
