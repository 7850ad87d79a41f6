package acceptance_test

import (
	"net/http"
	"testing"
	"time"
)

// PostgreSQL goes away long enough for the route's breaker to open (cooldown: an hour), comes back,
// and the demo is stopped: at shutdown the open breaker tries at once instead of waiting out its
// cooldown, so the backlog is written and the demo exits 0 (issue 14: "an open breaker throws away
// what it could write").
func TestShutdownWithOpenBreakerWritesTheBacklog(t *testing.T) {
	dsn, proxy, via := postgresThroughProxy(t)
	d := startDemo(t, "routes:\n  - {name: postgres, sink: postgres, levels: [WARN, ERROR], batch: {max_wait: 200ms}}\n  - {name: blob, sink: blob, batch: {max_wait: 200ms}}\n",
		"SLUICE_POSTGRES_DSN="+via, "SLUICE_POSTGRES_WRITE_TIMEOUT=2s",
		"SLUICE_BREAKER_FAILURES=1", "SLUICE_BREAKER_COOLDOWN=1h",
		"SLUICE_BUS_REDELIVERY_DELAY=100ms", "SLUICE_BUS_MAX_REDELIVERY_DELAY=500ms",
		"SLUICE_SHUTDOWN_TIMEOUT=20s")
	d.dsn = dsn // read back directly, not through the proxy

	// A first batch is written: the schema is there and the pool has connected once.
	warm := burst(50)
	send(t, d.base, warm)
	eventually(t, 30*time.Second, "the first batch in PostgreSQL", func() bool { return len(httpRows(t, dsn)) > 0 })

	proxy.Cut()
	reqs := burst(300)
	send(t, d.base, reqs)
	client := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 30*time.Second, "the postgres route's breaker open", func() bool {
		s, err := scrapeMetrics(client, d.base)
		return err == nil && s.get("sluice_breaker_state", "sink", "postgres") == 2
	})
	proxy.Restore()

	// The breaker's cooldown is an hour away: only the shutdown's trial can write the backlog.
	if code := d.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0 (the backlog written at shutdown)\n%s", code, tail(d.stderr.String(), 3000))
	}
	lines, _ := blobEvents(t, d.azure, d.cont)
	checkStored(t, append(warm, reqs...), httpRows(t, dsn), lines)
}
