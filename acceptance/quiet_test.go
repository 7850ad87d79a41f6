package acceptance_test

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// quietRoutes makes an outage fail as many batch writes as it can: small PostgreSQL batches, four
// written at once, quick retries; the archive flushes quickly so that the test drains soon.
const quietRoutes = `
routes:
  - name: postgres
    sink: postgres
    levels: [WARN, ERROR]
    batch: {max_wait: 100ms, max_events: 100, max_concurrent_writes: 4}
    retry: {max_attempts: 3, initial_interval: 10ms, max_interval: 50ms, max_elapsed: 1s}
  - {name: blob, sink: blob, batch: {max_wait: 500ms, max_events: 500}}
`

// sluiceLine is one of sluice's own lines on the demo's stderr (slog's text format).
type sluiceLine struct {
	level, msg, text string
	suppressed       int
}

var (
	levelRE      = regexp.MustCompile(`\blevel=(\S+)`)
	msgRE        = regexp.MustCompile(`\bmsg=("(?:[^"\\]|\\.)*"|\S+)`)
	suppressedRE = regexp.MustCompile(`\bsuppressed=(\d+)`)
)

// sluiceLines returns the lines of stderr that sluice itself logged (component=sluice, and
// sluice.watermill for Watermill's): not the demo's application logs.
func sluiceLines(t *testing.T, stderr string) []sluiceLine {
	t.Helper()
	var out []sluiceLine
	for _, text := range strings.Split(stderr, "\n") {
		if !strings.Contains(text, " component=sluice") {
			continue
		}
		l := sluiceLine{text: text}
		if m := levelRE.FindStringSubmatch(text); m != nil {
			l.level = m[1]
		}
		if m := msgRE.FindStringSubmatch(text); m != nil {
			l.msg = m[1]
			if s, err := strconv.Unquote(m[1]); err == nil {
				l.msg = s
			}
		}
		if m := suppressedRE.FindStringSubmatch(text); m != nil {
			l.suppressed, _ = strconv.Atoi(m[1])
		}
		out = append(out, l)
	}
	return out
}

// PostgreSQL is cut for a few seconds under load, with a breaker that never opens (every batch keeps
// trying: the most failed writes an outage can make) and quick retries and redeliveries: many batch
// write attempts fail, and sluice logs a handful of lines about them, not one per attempt: at most one
// failure line per failure_log_interval and a summary once they stop (or at exit), which together
// count every failed attempt (sluice_sink_write_errors_total). No other line of sluice's is a WARN
// or an ERROR (the breaker never opens; Watermill's own lines for each failure are at debug).
func TestPostgresOutageIsAFewLogLines(t *testing.T) {
	t.Parallel() // mostly waiting, through a proxy of its own: it runs beside the scale-out tests
	const interval = 10 * time.Second
	dsn, proxy, via := postgresThroughProxy(t)
	d := startDemo(t, quietRoutes, "SLUICE_POSTGRES_DSN="+via, "SLUICE_POSTGRES_WRITE_TIMEOUT=2s",
		"SLUICE_BREAKER_FAILURES=1000000", "SLUICE_BUS_REDELIVERY_DELAY=50ms", "SLUICE_BUS_MAX_REDELIVERY_DELAY=200ms",
		"SLUICE_FAILURE_LOG_INTERVAL="+interval.String())
	d.dsn = dsn
	const before, cut, after = 2 * time.Second, 5 * time.Second, 2 * time.Second
	lg := startLoad(t, d.base, burst(int((before+cut+after).Seconds()+5)*loadRate), loadRate)
	waitFor(before)
	cutAt := time.Now()
	proxy.Cut()
	waitFor(cut)
	proxy.Restore()
	waitFor(after)
	lg.stop()

	client := &http.Client{Timeout: 10 * time.Second}
	var final metricsSample
	eventually(t, 60*time.Second, "the backlog drained", func() bool {
		s, err := scrapeMetrics(client, d.base)
		if err != nil {
			return false
		}
		final = s
		return s.get("sluice_queue_depth") == 0 && s.get("sluice_queue_in_flight") == 0
	})
	if code := d.stop(60 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	ranFor := time.Since(cutAt)

	failed := final.get("sluice_sink_write_errors_total", "route", "postgres")
	lines := sluiceLines(t, d.stderr.String())
	var failureLines, counted int
	byMsg := map[string]int{}
	for _, l := range lines {
		byMsg[l.level+" "+l.msg]++
		switch l.msg {
		case "batch write failed":
			failureLines++
			counted += 1 + l.suppressed
		case "batch writes failed":
			failureLines++
			counted += l.suppressed
		default:
			if l.level == "WARN" || l.level == "ERROR" {
				t.Errorf("sluice logged %s", l.text)
			}
		}
	}
	for _, l := range lines[:min(len(lines), 20)] {
		t.Log(l.text)
	}
	t.Logf("%v failed batch writes in a %v cut, %d sent requests: %d lines of sluice's on stderr (%d about the failures) in %v: %v",
		failed, cut, len(lg.sent()), len(lines), failureLines, ranFor.Round(time.Second), byMsg)
	if failed == 0 {
		t.Fatal("no batch write failed: the cut was not seen")
	}
	if float64(counted) != failed {
		t.Errorf("the failure lines count %d failed writes, want sluice_sink_write_errors_total{route=postgres} = %v", counted, failed)
	}
	// At most one failure line and one summary per interval, and the summary at exit.
	if most := 2*(int(ranFor/interval)+1) + 1; failureLines > most {
		t.Errorf("%d lines about failed writes in %v, want at most %d with failure_log_interval %v", failureLines, ranFor, most, interval)
	}
	// Everything else sluice says is said once: start-up, migration, shutdown.
	if most := failureLines + 10; len(lines) > most {
		t.Errorf("%d lines of sluice's on stderr, want at most %d", len(lines), most)
	}
}
