package acceptance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// The resilience tests: a store goes away under load and comes back (TestPostgresOutage,
// TestAzuriteOutage), a batch carries poison (TestPoisonBatch), and SIGTERM lands right after a burst
// (TestDrainAfterBurstOnSIGTERM). None waits on a fixed sleep for something to happen: cooldowns and
// flush windows are short and configured, and every wait is a poll with a deadline.

// outageRoutes keeps batches small and flushes them within a fraction of a second.
const outageRoutes = `
routes:
  - {name: postgres, sink: postgres, levels: [WARN, ERROR], batch: {max_wait: 300ms, max_events: 250}}
  - {name: blob, sink: blob, batch: {max_wait: 500ms, max_events: 500}}
`

// Outage configuration. The bus is small on purpose (each route's share holds 1,000 events) so that an outage of a few seconds at a few hundred events/s
// overflows the share of the route whose store is down: the test sees the bound hold, and the drops
// counted, within seconds.
const (
	outageFailures   = 3
	outageCooldown   = 2 * time.Second
	outageMaxEvents  = 1000 // SLUICE_BUS_MAX_EVENTS, per route
	pgWriteTimeout   = 2 * time.Second
	blobWriteTimeout = 3 * time.Second

	loadRate     = 300 // requests per second
	warmup       = time.Second
	beforeOutage = 5 * time.Second
	outageFor    = 8 * time.Second
	afterOutage  = 5 * time.Second
	sampleEvery  = 200 * time.Millisecond
)

// outageEnv is the configuration of an outage test of sink. Only that sink gets a short write timeout:
// the other one shares its store with whatever else runs on the machine and keeps its default.
func outageEnv(sink string) []string {
	timeout := "SLUICE_POSTGRES_WRITE_TIMEOUT=" + pgWriteTimeout.String()
	if sink == "blob" {
		timeout = "SLUICE_BLOB_WRITE_TIMEOUT=" + blobWriteTimeout.String()
	}
	return []string{
		timeout,
		"SLUICE_BREAKER_FAILURES=" + strconv.Itoa(outageFailures),
		"SLUICE_BREAKER_COOLDOWN=" + outageCooldown.String(),
		"SLUICE_BUS_MAX_EVENTS=" + strconv.Itoa(outageMaxEvents),
		// A message nacked during the outage comes back within a second once the store is back.
		"SLUICE_BUS_REDELIVERY_DELAY=100ms",
		"SLUICE_BUS_MAX_REDELIVERY_DELAY=1s",
		"SLUICE_SHUTDOWN_TIMEOUT=30s",
	}
}

// PostgreSQL becomes unreachable under load and comes back.
func TestPostgresOutage(t *testing.T) {
	t.Parallel() // mostly waiting, through a proxy of its own: it runs beside the scale-out tests
	dsn, proxy, via := postgresThroughProxy(t)
	d := startDemo(t, outageRoutes, append(outageEnv("postgres"), "SLUICE_POSTGRES_DSN="+via)...)
	d.dsn = dsn // read back directly, not through the proxy
	runOutage(t, d, proxy, "postgres", 2)
}

// Azurite becomes unreachable under load and comes back.
func TestAzuriteOutage(t *testing.T) {
	t.Parallel() // mostly waiting, through a proxy of its own: it runs beside the scale-out tests
	azure := testenv.Azurite(t)
	m := regexp.MustCompile(`BlobEndpoint=https?://([^/;]+)`).FindStringSubmatch(azure)
	if m == nil {
		t.Fatalf("no BlobEndpoint in %s", testenv.AzuriteEnv)
	}
	proxy := newProxy(t, m[1])
	via := strings.Replace(azure, m[1], proxy.Addr(), 1)
	d := startDemo(t, outageRoutes, append(outageEnv("blob"), "SLUICE_BLOB_CONNECTION_STRING="+via)...)
	runOutage(t, d, proxy, "blob", 4)
}

// runOutage drives the demo at loadRate requests/s for warmup + beforeOutage, cuts proxy for
// outageFor, restores it, keeps the load for afterOutage, waits for the backlog to drain, and checks
// the breaker of route (named after its sink), the latency, the bounds, and the accounting.
// maxConcurrentWrites is the route's batch.max_concurrent_writes (its default).
func runOutage(t *testing.T, d *demo, proxy *tcpProxy, route string, maxConcurrentWrites int) {
	// Requests: the mix of burst (60% INFO, 20% 404 WARN, 20% 500 ERROR of which half /fail, which
	// also logs one application ERROR event), enough for the whole run.
	total := warmup + beforeOutage + outageFor + afterOutage
	reqs := burst(int(total.Seconds()*loadRate) + loadRate)

	smp := startSampler(t, d.base)
	lg := startLoad(t, d.base, reqs, loadRate)

	waitFor(warmup)
	lg.setPhase(phaseBefore)
	waitFor(beforeOutage)

	errsBefore := smp.last().get("sluice_sink_write_errors_total", "route", route)
	cutAt := time.Now()
	proxy.Cut()
	lg.setPhase(phaseDuring)
	// The breaker must open while the store is down: poll for it (the outage lasts outageFor anyway).
	var openAt time.Time
	var errsAtOpen float64
	for deadline := cutAt.Add(outageFor); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if openAt.IsZero() {
			if s := smp.last(); s.at.After(cutAt) && s.get("sluice_breaker_state", "route", route) == 2 {
				openAt, errsAtOpen = s.at, s.get("sluice_sink_write_errors_total", "route", route)
			}
		}
	}
	errsDuring := smp.last().get("sluice_sink_write_errors_total", "route", route) - errsBefore
	restoreAt := time.Now()
	proxy.Restore()
	lg.setPhase(phaseAfter)
	waitFor(afterOutage)
	lg.stop()

	if openAt.IsZero() {
		t.Fatalf("breaker of route %s not seen open during an outage of %v", route, outageFor)
	}
	t.Logf("breaker open %v after the cut, after %v failed batch writes (failures=%d, max_concurrent_writes=%d); %v failed writes in the %v outage",
		openAt.Sub(cutAt).Round(time.Millisecond), errsAtOpen-errsBefore, outageFailures, maxConcurrentWrites, errsDuring, outageFor)
	// It opens at the configured number of consecutive failures; writes already under way at that
	// moment (at most max_concurrent_writes - 1 more) may still fail and count.
	if got, most := errsAtOpen-errsBefore, float64(outageFailures+maxConcurrentWrites-1); got > most {
		t.Errorf("breaker opened after %v failed writes, want at most %v", got, most)
	}
	// While open, only one trial write per cooldown reaches the store (no retry storm).
	if most := float64(outageFailures + maxConcurrentWrites + int(outageFor/outageCooldown) + 1); errsDuring > most {
		t.Errorf("%v failed writes during a %v outage, want at most %v with a %v cooldown", errsDuring, outageFor, most, outageCooldown)
	}

	// Closed again: after the cooldown that is running at the restore, one trial that may itself have
	// started just before the restore (and fail within the write timeout), and one more cooldown.
	writeTimeout := pgWriteTimeout
	if route == "blob" {
		writeTimeout = blobWriteTimeout
	}
	// The expected time is logged, not asserted: on a busy machine a trial write can take longer
	// than its timeout to be scheduled at all, and only the closing itself is the breaker's promise.
	closeBound := 2*outageCooldown + writeTimeout + 3*time.Second
	var closedAt time.Time
	eventually(t, closeBound+60*time.Second, "breaker closed after the restore", func() bool {
		for _, s := range smp.since(restoreAt) {
			if s.get("sluice_breaker_state", "route", route) == 0 {
				closedAt = s.at
				return true
			}
		}
		return false
	})
	t.Logf("breaker closed %v after the restore (expected within %v on an idle machine)", closedAt.Sub(restoreAt).Round(time.Millisecond), closeBound)

	// The backlog drains: nothing left in the bus.
	drainDeadline := time.Now().Add(60 * time.Second)
	for {
		s := smp.last()
		if s.at.After(lg.stoppedAt) && s.get("sluice_queue_depth") == 0 && s.get("sluice_queue_in_flight") == 0 {
			t.Logf("backlog drained %v after the load stopped", s.at.Sub(lg.stoppedAt).Round(time.Millisecond))
			break
		}
		if time.Now().After(drainDeadline) {
			t.Fatalf("the backlog did not drain within 60s of the end of the load: queue depth %v, in flight %v, breakers %v",
				s.get("sluice_queue_depth"), s.get("sluice_queue_in_flight"), s.byLabel("sluice_breaker_state", "", "", "route"))
		}
		time.Sleep(sampleEvery)
	}
	final := smp.stop()

	// Latency is measured by sluice-bench, never asserted here: on a busy 2-core machine the p99 of
	// one second of requests moves between 3 ms and 60 ms with no outage at all. It is logged.
	before, during, after := lg.stats(phaseBefore), lg.stats(phaseDuring), lg.stats(phaseAfter)
	t.Logf("latency before the outage: %v", before)
	t.Logf("latency during the outage: %v", during)
	t.Logf("latency after the outage:  %v", after)

	// Bounds: each route's share of the bus holds at most max_events events (open chunks included).
	// Goroutines do not grow with the events held: the router runs one per batch being written (at
	// most max_concurrent_writes per route), the batch subscriber one per subscription and per batch
	// out; add the HTTP server's connections (the load uses at most loadWorkers) and a fixed base
	// (runtime, pools, timers, the database pool).
	// The heap holds at most 2 x 1,000 queued events of a few KB each, with their decoded copies and
	// the batches being written: tens of MB; 200 MiB would mean the bound leaks.
	const goroutineBound = 2*loadWorkers + 200
	const heapBound = 200 << 20
	peakG, peakH, peakDepth := smp.peaks()
	t.Logf("peaks: %v goroutines (bound %d), heap in use %.1f MiB (bound %d MiB), queue depth %v events (bound %d)",
		peakG, goroutineBound, peakH/(1<<20), heapBound>>20, peakDepth, 2*outageMaxEvents)
	if peakG > float64(goroutineBound) {
		t.Errorf("goroutines peaked at %v, want below %d", peakG, goroutineBound)
	}
	if peakH > heapBound {
		t.Errorf("heap in use peaked at %.1f MiB, want below %d MiB", peakH/(1<<20), heapBound>>20)
	}
	if peakDepth > 2*outageMaxEvents {
		t.Errorf("queue depth peaked at %v, want at most %d (2 routes x bus.max_events)", peakDepth, 2*outageMaxEvents)
	}

	// Accounting, from the final metrics read before the process stops.
	sent := lg.sent()
	var warnErr, fails int
	for _, r := range sent {
		if r.level != "INFO" {
			warnErr++
		}
		if r.path == "/fail" {
			fails++
		}
	}
	dropped := func(route string) float64 { return final.get("sluice_events_dropped_total", "route", route) }
	t.Logf("sent %d requests (%d WARN/ERROR, %d /fail application errors); dropped: postgres %v %v, blob %v %v, before routing %v; dead letters %v",
		len(sent), warnErr, fails, dropped("postgres"), final.byLabel("sluice_events_dropped_total", "route", "postgres", "reason"),
		dropped("blob"), final.byLabel("sluice_events_dropped_total", "route", "blob", "reason"), dropped(""),
		final.get("sluice_dead_letters_total"))
	if n := dropped(""); n != 0 {
		t.Errorf("%v events dropped before routing, want 0", n)
	}
	if n := final.get("sluice_dead_letters_total"); n != 0 {
		t.Errorf("%v dead letters, want 0: an outage is not the data's fault", n)
	}
	// The outage outlasts what the route's share holds (about 4 s of its events): the bound holds by
	// dropping, and counting, the newest events of that route only.
	if dropped(route) == 0 {
		t.Errorf("no event of route %s dropped: the outage did not fill its share of the bus", route)
	}

	// PostgreSQL: every WARN/ERROR request and every /fail application error is a row or a drop.
	pgRows, pgApp := outageRows(t, d.dsn)
	byID := map[string]request{}
	for _, r := range sent {
		byID[r.id] = r
	}
	for id, n := range pgRows {
		r, ok := byID[id]
		switch {
		case !ok:
			t.Errorf("row for a request never sent: %q", id)
		case r.level == "INFO":
			t.Errorf("row for INFO request %s", id)
		case n != 1:
			t.Errorf("request %s: %d rows, want 1", id, n)
		}
	}
	t.Logf("postgres: %d http rows + %d app rows + %v dropped = %v; accepted %d WARN/ERROR requests + %d application errors = %d",
		len(pgRows), pgApp, dropped("postgres"), float64(len(pgRows)+pgApp)+dropped("postgres"), warnErr, fails, warnErr+fails)
	if got := float64(len(pgRows)+pgApp) + dropped("postgres"); got != float64(warnErr+fails) {
		t.Errorf("postgres: rows + dropped = %v, want %d (every accepted event stored or counted as dropped)", got, warnErr+fails)
	}

	// The archive: every request and every application error is a line or a drop.
	lines, appLines, dupLines := outageArchive(t, d.azure, d.cont)
	for id, n := range lines {
		if _, ok := byID[id]; !ok {
			t.Errorf("blob line for a request never sent: %q", id)
		} else if n != 1 {
			t.Errorf("request %s: %d blob lines, want 1", id, n)
		}
	}
	if dupLines != 0 {
		t.Errorf("%d events are in the archive more than once", dupLines)
	}
	t.Logf("blob: %d http lines + %d app lines + %v dropped = %v; accepted %d requests + %d application errors = %d",
		len(lines), appLines, dropped("blob"), float64(len(lines)+appLines)+dropped("blob"), len(sent), fails, len(sent)+fails)
	if got := float64(len(lines)+appLines) + dropped("blob"); got != float64(len(sent)+fails) {
		t.Errorf("blob: lines + dropped = %v, want %d (every accepted event stored or counted as dropped)", got, len(sent)+fails)
	}

	// Everything accepted is written: the process exits 0.
	if code := d.stop(60 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// waitFor is the test's own pacing (how long a load phase lasts), not a wait for something to happen.
func waitFor(d time.Duration) { time.Sleep(d) }

// outageRows returns the kind=http rows of application_logs counted by request id, and the number of
// kind=app rows. It checks that ids are unique.
func outageRows(t *testing.T, dsn string) (map[string]int, int) {
	t.Helper()
	ctx, conn := connect(t, dsn)
	var all, distinct int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT id) FROM application_logs`).Scan(&all, &distinct); err != nil {
		t.Fatal(err)
	}
	if all != distinct {
		t.Errorf("application_logs: %d rows, %d distinct ids", all, distinct)
	}
	byReq := map[string]int{}
	rows, err := conn.Query(ctx, `SELECT request_id, count(*) FROM application_logs WHERE kind = 'http' GROUP BY request_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		byReq[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var app int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM application_logs WHERE kind = 'app'`).Scan(&app); err != nil {
		t.Fatal(err)
	}
	return byReq, app
}

// archive reads every blob of the container: the events of the event blobs, in no particular order
// and with every copy, the dead letters of the dead-letter blobs, and the number of blobs.
func archive(t *testing.T, azure, container string) ([]*event.Event, []subscribers.DeadLetter, int) {
	t.Helper()
	// Generous: a scale-out run's archive is hundreds of blobs, read from an Azurite that a busy
	// machine shares with everything else.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	store, err := azurestore.Open(ctx, azurestore.Config{ConnectionString: azure, Container: container})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	names, err := store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var (
		events  []*event.Event
		letters []subscribers.DeadLetter
	)
	for _, name := range names {
		data, err := store.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if blobsink.IsDeadLetter(name) {
			ls, err := blobsink.DecodeDeadLetters(data)
			if err != nil {
				t.Fatalf("blob %s: %v", name, err)
			}
			letters = append(letters, ls...)
			continue
		}
		es, err := blobsink.Decode(data)
		if err != nil {
			t.Fatalf("blob %s: %v", name, err)
		}
		events = append(events, es...)
	}
	return events, letters, len(names)
}

// outageArchive reads the archive: http lines counted by request id, the number of app lines, and how
// many events occur more than once. An outage makes no dead letters.
func outageArchive(t *testing.T, azure, container string) (byReq map[string]int, app, dups int) {
	t.Helper()
	events, letters, _ := archive(t, azure, container)
	if len(letters) != 0 {
		t.Errorf("%d dead letters in the archive, want none", len(letters))
	}
	byReq = map[string]int{}
	seen := map[uuid.UUID]bool{}
	for _, e := range events {
		if seen[e.ID] {
			dups++
			continue
		}
		seen[e.ID] = true
		if e.Kind == event.KindHTTP {
			byReq[e.RequestID]++
		} else {
			app++
		}
	}
	return byReq, app, dups
}

// Load phases.
const (
	phaseWarmup = iota
	phaseBefore
	phaseDuring
	phaseAfter
	phases
)

const loadWorkers = 32

// load sends requests at a fixed rate (open loop: a slow response does not delay the next request)
// and records each one's latency under the phase it was sent in.
type load struct {
	t         *testing.T
	rate      int // requests per second
	phase     atomic.Int32
	quit      chan struct{}
	done      chan struct{}
	stoppedAt time.Time

	mu      sync.Mutex
	started [phases]time.Time
	lat     []latency
	out     []request // sent, in order
}

type latency struct {
	at    time.Time // when the request was sent
	took  time.Duration
	phase int32
}

func startLoad(t *testing.T, base string, reqs []request, rate int) *load {
	l := &load{t: t, rate: rate, quit: make(chan struct{}), done: make(chan struct{})}
	l.started[phaseWarmup] = time.Now()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: loadWorkers, MaxConnsPerHost: loadWorkers}}
	work := make(chan request, len(reqs))
	var wg sync.WaitGroup
	for range loadWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				phase := l.phase.Load()
				var body io.Reader = http.NoBody
				if r.body != "" {
					body = strings.NewReader(r.body)
				}
				req, _ := http.NewRequest(r.method, base+r.path, body)
				req.Header.Set("X-Request-ID", r.id)
				if r.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("%s %s: %v", r.method, r.path, err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				took := time.Since(start)
				if resp.StatusCode != r.status {
					t.Errorf("%s %s: status %d, want %d", r.method, r.path, resp.StatusCode, r.status)
				}
				l.mu.Lock()
				l.lat = append(l.lat, latency{at: start, took: took, phase: phase})
				l.mu.Unlock()
			}
		}()
	}
	go func() {
		defer close(l.done)
		defer func() { close(work); wg.Wait(); client.CloseIdleConnections() }()
		start := time.Now()
		interval := time.Second / time.Duration(rate)
		for i, r := range reqs {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				select {
				case <-time.After(wait):
				case <-l.quit:
					return
				}
			}
			select {
			case <-l.quit:
				return
			default:
			}
			l.mu.Lock()
			l.out = append(l.out, r)
			l.mu.Unlock()
			work <- r
		}
		t.Errorf("load: ran out of requests after %d", len(reqs))
	}()
	return l
}

func (l *load) setPhase(p int32) {
	l.mu.Lock()
	l.started[p] = time.Now()
	l.mu.Unlock()
	l.phase.Store(p)
}

// stop stops sending and waits for the responses of what was sent.
func (l *load) stop() {
	close(l.quit)
	<-l.done
	l.stoppedAt = time.Now()
}

func (l *load) sent() []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.out)
}

// phaseStats is the latency of one phase: p99 over all its requests, the median of the p99s of its
// whole seconds (see runOutage), and the slowest request.
type phaseStats struct {
	n              int
	p50            time.Duration
	p99, typical99 time.Duration
	max            time.Duration
	perSecond      []time.Duration
}

func (l *load) stats(phase int32) phaseStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []time.Duration
	bySecond := map[int][]time.Duration{}
	for _, x := range l.lat {
		if x.phase != phase {
			continue
		}
		all = append(all, x.took)
		sec := int(x.at.Sub(l.started[phase]) / time.Second)
		bySecond[sec] = append(bySecond[sec], x.took)
	}
	st := phaseStats{n: len(all), p99: p99(all)}
	if len(all) > 0 {
		st.max = slices.Max(all)
		sorted := slices.Clone(all)
		slices.Sort(sorted)
		st.p50 = sorted[len(sorted)/2]
	}
	for sec := 0; ; sec++ {
		lat, ok := bySecond[sec]
		if !ok {
			break
		}
		if len(lat) >= l.rate*3/4 { // a whole second (not the cut-off last one)
			st.perSecond = append(st.perSecond, p99(lat))
		}
	}
	if len(st.perSecond) > 0 {
		s := slices.Clone(st.perSecond)
		slices.Sort(s)
		st.typical99 = s[len(s)/2]
	}
	return st
}

func (st phaseStats) String() string {
	per := make([]string, len(st.perSecond))
	for i, d := range st.perSecond {
		per[i] = d.Round(100 * time.Microsecond).String()
	}
	return fmt.Sprintf("p50 %v, p99 %v, median per-second p99 %v, max %v over %d requests; per-second p99s [%s]",
		st.p50.Round(10*time.Microsecond), st.p99.Round(10*time.Microsecond), st.typical99.Round(10*time.Microsecond), st.max.Round(10*time.Microsecond), st.n, strings.Join(per, " "))
}

// p99 returns the 99th percentile of lat (which it sorts).
func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[min(len(lat)-1, len(lat)*99/100)]
}

// metricsSample is one scrape of /metrics.
type metricsSample struct {
	at     time.Time
	series []metricSeries
}

type metricSeries struct {
	name   string
	labels map[string]string
	value  float64
}

// get sums the series of name whose labels include the given name/value pairs.
func (s metricsSample) get(name string, labels ...string) float64 {
	var sum float64
	for _, m := range s.series {
		if m.name == name && m.has(labels) {
			sum += m.value
		}
	}
	return sum
}

// byLabel returns the series of name matching the pairs, summed by the value of label by.
func (s metricsSample) byLabel(name, key, value, by string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s.series {
		if m.name == name && m.has([]string{key, value}) && m.value != 0 {
			out[m.labels[by]] += m.value
		}
	}
	return out
}

func (m metricSeries) has(pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		if m.labels[pairs[i]] != pairs[i+1] {
			return false
		}
	}
	return true
}

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// parseMetrics parses the Prometheus text format (the lines sluice's /metrics serves).
func parseMetrics(text string) ([]metricSeries, error) {
	var out []metricSeries
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		key := line[:sp]
		m := metricSeries{value: v, labels: map[string]string{}}
		name, rest, _ := strings.Cut(key, "{")
		m.name = name
		for _, l := range labelRE.FindAllStringSubmatch(rest, -1) {
			m.labels[l[1]] = l[2]
		}
		out = append(out, m)
	}
	return out, nil
}

func scrapeMetrics(client *http.Client, base string) (metricsSample, error) {
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		return metricsSample{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return metricsSample{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return metricsSample{}, fmt.Errorf("/metrics: %s", resp.Status)
	}
	s, err := parseMetrics(string(body))
	return metricsSample{at: time.Now(), series: s}, err
}

// sampler scrapes /metrics every sampleEvery and keeps every sample.
type sampler struct {
	t    *testing.T
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples []metricsSample
}

func startSampler(t *testing.T, base string) *sampler {
	s := &sampler{t: t, quit: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	first, err := scrapeMetrics(client, base)
	if err != nil {
		t.Fatal(err)
	}
	s.samples = append(s.samples, first)
	go func() {
		defer close(s.done)
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-tick.C:
			}
			m, err := scrapeMetrics(client, base)
			if err != nil {
				t.Errorf("scrape: %v", err)
				continue
			}
			s.mu.Lock()
			s.samples = append(s.samples, m)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *sampler) last() metricsSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples[len(s.samples)-1]
}

func (s *sampler) since(t time.Time) []metricsSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []metricsSample
	for _, m := range s.samples {
		if !m.at.Before(t) {
			out = append(out, m)
		}
	}
	return out
}

// stop stops sampling and returns the last sample.
func (s *sampler) stop() metricsSample {
	close(s.quit)
	<-s.done
	return s.last()
}

// peaks returns the largest go_goroutines, go_memstats_heap_inuse_bytes and sluice_queue_depth seen.
func (s *sampler) peaks() (goroutines, heap, depth float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.samples {
		goroutines = max(goroutines, m.get("go_goroutines"))
		heap = max(heap, m.get("go_memstats_heap_inuse_bytes"))
		depth = max(depth, m.get("sluice_queue_depth"))
	}
	return goroutines, heap, depth
}

// SIGTERM right after a burst of 5,000 requests, with the default flush windows (5 s, 10 s) not yet
// passed: every accepted event is written before the process exits, and it exits 0.
func TestDrainAfterBurstOnSIGTERM(t *testing.T) {
	d := startDemo(t, "")
	reqs := burst(5000)
	start := time.Now()
	send(t, d.base, reqs)
	sentIn := time.Since(start)
	start = time.Now()
	if code := d.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0\n%s", code, tail(d.stderr.String(), 2000))
	}
	t.Logf("5000 requests sent in %v; SIGTERM to exit %v", sentIn.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if !strings.Contains(d.stdout.String(), "every accepted event was written") {
		t.Errorf("stdout does not confirm the flush:\n%s", d.stdout)
	}
	lines, blobs := blobEvents(t, d.azure, d.cont)
	rows := httpRows(t, d.dsn)
	checkStored(t, reqs, rows, lines)
	// The application errors that /fail logs are accepted events too.
	fails := 0
	for _, r := range reqs {
		if r.path == "/fail" {
			fails++
		}
	}
	_, app := outageRows(t, d.dsn)
	_, appLines, dups := outageArchive(t, d.azure, d.cont)
	t.Logf("%d http rows, %d app rows; %d blobs with %d http and %d app lines", len(rows), app, blobs, len(lines), appLines)
	if app != fails || appLines != fails {
		t.Errorf("application errors: %d rows and %d blob lines, want %d each", app, appLines, fails)
	}
	if dups != 0 {
		t.Errorf("%d events are in the archive more than once", dups)
	}
}

// A batch with a few bad events among many good ones, through the pipeline as a library: every good
// event is written, and exactly the bad ones are dead letters, on the routes that refuse them, with
// their reason.
//
//   - refused: an event that a CHECK constraint of the user's on application_logs refuses (installed in
//     the test's database: SQLSTATE 23514, check_violation), which only PostgreSQL can find bad: bad
//     for the postgres route only, the archive stores it;
//   - undecodable: a line whose timestamp is not a time (an event whose Raw is that line);
//   - oversize: an event with a 10 MB attribute, over the routes' batch.max_event_bytes (1 MiB).
func TestPoisonBatch(t *testing.T) {
	ctx := context.Background()
	cfg := sluice.DefaultConfig()
	pool := testenv.MigratedPostgres(t)
	cfg.Postgres.DSN = pool.Config().ConnString()
	cfg.Blob.ConnectionString = testenv.Azurite(t)
	cfg.Blob.Container = testenv.Container(t)
	// Publish would shed the oversize event's attribute (capture.max_event_bytes, 256 KiB): let it
	// through, to the routes' own limit, which keeps it as a dead letter.
	cfg.Capture.MaxEventBytes = 16 << 20
	// Both routes take every event, in one batch each: 2,000 events or 2 s, more than the test
	// publishes and longer than it takes to.
	batch := config.BatchPolicy{MaxEvents: 2000, MaxWait: 2 * time.Second}
	cfg.Routes = []sluice.Route{
		{Name: "postgres", Sink: config.SinkPostgres, Batch: batch},
		{Name: "blob", Sink: config.SinkBlob, Batch: batch},
	}
	const refusedMessage = "poison: refused by a constraint of the user"
	// A rule of the user's, in the test's own database, that only PostgreSQL can apply.
	if _, err := pool.Exec(ctx, `ALTER TABLE application_logs ADD CONSTRAINT no_poison CHECK (message <> '`+refusedMessage+`')`); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	p, err := sluice.New(ctx, cfg, sluice.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = p.Close(ctx)
		if t.Failed() {
			t.Logf("sluice log (tail):\n%s", tail(logs.String(), 4000))
		}
	}()

	goods := sinktest.Events(1000, time.Now().UTC().Add(-time.Minute))

	refused := event.New(event.LevelError, event.KindHTTP, refusedMessage)
	refused.Status = 500
	refused.Response = &event.Message{Body: &event.Body{ContentType: "application/json", Size: 15, JSON: json.RawMessage(`{"n":1}`)}}
	refusedRaw, err := refused.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}

	undecodable := event.New(event.LevelError, event.KindHTTP, "poison: not a time")
	undecodable.Raw = []byte(`{"id":"` + undecodable.ID.String() + `","ts":"yesterday at noon","level":"ERROR","kind":"http","message":"poison: not a time"}`)

	oversize := event.New(event.LevelWarn, event.KindApp, "poison: a runaway attribute")
	oversize.Attrs = map[string]any{"dump": strings.Repeat("x", 10<<20)}
	oversizeRaw, err := oversize.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}

	publish := func(events ...*event.Event) {
		for _, e := range events {
			if err := p.Publish(ctx, e); err != nil {
				t.Fatalf("publish %s: %v", e.ID, err)
			}
		}
	}
	publish(goods[:500]...)
	publish(refused, undecodable)
	publish(goods[500:]...)
	publish(oversize)

	// Wait until the batches are written and the letters kept, then close (which writes nothing more).
	scrape := func() metricsSample {
		rec := httptest.NewRecorder()
		p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		s, err := parseMetrics(rec.Body.String())
		if err != nil {
			t.Fatal(err)
		}
		return metricsSample{at: time.Now(), series: s}
	}
	eventually(t, 60*time.Second, "1,000 events written to postgres, 1,001 to blob, 5 dead letters", func() bool {
		m := scrape()
		return m.get("sluice_sink_events_written_total", "route", "postgres") >= 1000 &&
			m.get("sluice_sink_events_written_total", "route", "blob") >= 1001 && m.get("sluice_dead_letters_total") >= 5
	})
	if err := p.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	m := scrape()
	t.Logf("postgres: %v events written in %v write attempts of %v events in all (a batch, then its halves down to the bad event); blob: %v events in %v attempts",
		m.get("sluice_sink_events_written_total", "route", "postgres"), m.get("sluice_sink_batch_events_count", "sink", "postgres"),
		m.get("sluice_sink_batch_events_sum", "sink", "postgres"),
		m.get("sluice_sink_events_written_total", "route", "blob"), m.get("sluice_sink_batch_events_count", "sink", "blob"))

	// Metrics: each good event written once per route, exactly five letters, nothing dropped.
	if got := m.get("sluice_sink_events_written_total", "route", "postgres"); got != 1000 {
		t.Errorf("postgres: %v events written, want 1000", got)
	}
	if got := m.get("sluice_sink_events_written_total", "route", "blob"); got != 1001 {
		t.Errorf("blob: %v events written, want 1001 (the refused one is fine there)", got)
	}
	wantLetters := map[[2]string]float64{
		{"postgres", subscribers.ReasonInvalidData}: 1,
		{"postgres", subscribers.ReasonDecodeError}: 1,
		{"postgres", subscribers.ReasonOversize}:    1,
		{"blob", subscribers.ReasonDecodeError}:     1,
		{"blob", subscribers.ReasonOversize}:        1,
	}
	gotLetters := map[[2]string]float64{}
	for _, s := range m.series {
		if s.name == "sluice_dead_letters_total" && s.value != 0 {
			gotLetters[[2]string{s.labels["route"], s.labels["reason"]}] += s.value
		}
	}
	if !maps.Equal(gotLetters, wantLetters) {
		t.Errorf("sluice_dead_letters_total by route and reason: %v, want %v", gotLetters, wantLetters)
	}
	if n := m.get("sluice_events_dropped_total"); n != 0 {
		t.Errorf("%v events dropped, want 0: %v", n, m.byLabel("sluice_events_dropped_total", "", "", "reason"))
	}

	// PostgreSQL: every good event, nothing else, and the three letters of the postgres route.
	conn, err := pgx.Connect(ctx, cfg.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	stored := map[uuid.UUID]bool{}
	rows, err := conn.Query(ctx, `SELECT id FROM application_logs`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if stored[id] {
			t.Errorf("application_logs: %s twice", id)
		}
		stored[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	checkIDs(t, "application_logs", stored, goods)

	type letter struct {
		id     uuid.UUID
		route  string
		reason string
		raw    []byte
		detail string
	}
	var pgLetters []letter
	rows, err = conn.Query(ctx, `SELECT coalesce(id, '00000000-0000-0000-0000-000000000000'::uuid), route, reason, raw, coalesce(detail, '')
		FROM application_logs_dead_letter`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var l letter
		if err := rows.Scan(&l.id, &l.route, &l.reason, &l.raw, &l.detail); err != nil {
			t.Fatal(err)
		}
		pgLetters = append(pgLetters, l)
		t.Logf("dead letter: route %s, reason %s, %d bytes: %.200s", l.route, l.reason, len(l.raw), l.detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []letter{
		{refused.ID, "postgres", subscribers.ReasonInvalidData, refusedRaw, ""},
		{uuid.Nil, "postgres", subscribers.ReasonDecodeError, undecodable.Raw, ""},
		{oversize.ID, "postgres", subscribers.ReasonOversize, oversizeRaw, ""},
	}
	checkLetters := func(where string, got []letter, want []letter) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: %d dead letters, want %d", where, len(got), len(want))
		}
		for _, w := range want {
			found := false
			for _, g := range got {
				if g.id == w.id && g.route == w.route && g.reason == w.reason {
					found = true
					if !bytes.Equal(g.raw, w.raw) {
						t.Errorf("%s: dead letter %s (%s) keeps %d bytes that differ from the %d published", where, w.id, w.reason, len(g.raw), len(w.raw))
					}
				}
			}
			if !found {
				t.Errorf("%s: no dead letter %s on route %s for %s", where, w.id, w.route, w.reason)
			}
		}
	}
	checkLetters("application_logs_dead_letter", pgLetters, want)
	for _, l := range pgLetters {
		if l.reason == subscribers.ReasonInvalidData && !strings.Contains(l.detail, "23514") {
			t.Errorf("the refused event's dead letter says %q, want PostgreSQL's refusal (SQLSTATE 23514)", l.detail)
		}
	}

	// The archive: every good event and the refused one, and the two letters of the blob route under
	// dead-letter/.
	events, letters, blobs := archive(t, cfg.Blob.ConnectionString, cfg.Blob.Container)
	archived := map[uuid.UUID]bool{}
	for _, e := range events {
		if archived[e.ID] {
			t.Errorf("archive: %s twice", e.ID)
		}
		archived[e.ID] = true
	}
	var blobLetters []letter
	for _, l := range letters {
		blobLetters = append(blobLetters, letter{l.ID, l.Route, l.Reason, l.Raw, l.Detail})
	}
	checkIDs(t, "archive", archived, append(slices.Clone(goods), refused))
	checkLetters("dead-letter blobs", blobLetters, []letter{
		{uuid.Nil, "blob", subscribers.ReasonDecodeError, undecodable.Raw, ""},
		{oversize.ID, "blob", subscribers.ReasonOversize, oversizeRaw, ""},
	})
	t.Logf("%d rows and %d dead-letter rows; %d blobs holding %d events and %d dead letters", len(stored), len(pgLetters), blobs, len(archived), len(blobLetters))
}

// checkIDs asserts that got holds exactly the ids of want.
func checkIDs(t *testing.T, where string, got map[uuid.UUID]bool, want []*event.Event) {
	t.Helper()
	wantIDs := map[uuid.UUID]bool{}
	for _, e := range want {
		wantIDs[e.ID] = true
		if !got[e.ID] {
			t.Errorf("%s: event %s (%s) missing", where, e.ID, e.Message)
		}
	}
	for id := range got {
		if !wantIDs[id] {
			t.Errorf("%s: unexpected event %s", where, id)
		}
	}
	if len(got) != len(wantIDs) {
		t.Errorf("%s: %d events, want %d", where, len(got), len(wantIDs))
	}
}
