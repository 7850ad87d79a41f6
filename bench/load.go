package bench

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// requestMix describes the targets of demoTargets.
const requestMix = "GET /hello 80% (200, INFO: archive), POST /echo with a 1 KiB JSON body 10% (200, INFO: " +
	"archive, bodies captured), GET /nope 10% (404, WARN: archive and PostgreSQL); keep-alive, loopback"

// Sustained: what a load step must achieve to count as sustained.
const (
	sustainedMaxErrorShare = 0.001 // of the requests
	sustainedMinShare      = 0.95  // of the requests asked for
	sustainedMaxP99        = 50.0  // ms
)

var sustainedRule = fmt.Sprintf("errors (transport, timeout, 5xx) at most %.1f%% of requests, at least %.0f%% "+
	"of the requests asked for sent and answered, and p99 at most %.0f ms",
	sustainedMaxErrorShare*100, sustainedMinShare*100, sustainedMaxP99)

// loadTarget is what attacks aim at: the request mix against one demo, and the client that keeps the
// connections to it across attacks (one per attack would leave its idle connections open, in this
// process and in the demo, until the descriptors run out).
type loadTarget struct {
	client  *http.Client
	targets []vegeta.Target
	// answered counts the responses of every attack on the target (whatever their status).
	answered atomic.Int64
	// conns counts the client's connections to the target that are open: dialled and not yet closed.
	conns atomic.Int64
}

// newLoadTarget is the request mix against the demo at base ("http://127.0.0.1:PORT").
func newLoadTarget(base string) *loadTarget {
	body := []byte(`{"customer_id":4711,"note":"` + strings.Repeat("x", 960) + `","items":[{"sku":"SKU-00042","qty":2}]}`)
	header := http.Header{"User-Agent": {"sluice-bench/1"}}
	jsonHeader := http.Header{"User-Agent": {"sluice-bench/1"}, "Content-Type": {"application/json"}}
	hello := vegeta.Target{Method: http.MethodGet, URL: base + "/hello", Header: header}
	t := &loadTarget{}
	dialer := &net.Dialer{KeepAlive: 30 * time.Second}
	t.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			t.conns.Add(1)
			return &countedConn{Conn: c, open: &t.conns}, nil
		},
		MaxIdleConnsPerHost: maxInFlight, MaxConnsPerHost: maxInFlight, IdleConnTimeout: 30 * time.Second,
		DisableCompression: true,
	}}
	for range 8 {
		t.targets = append(t.targets, hello)
	}
	t.targets = append(t.targets,
		vegeta.Target{Method: http.MethodPost, URL: base + "/echo", Body: body, Header: jsonHeader},
		vegeta.Target{Method: http.MethodGet, URL: base + "/nope", Header: header})
	return t
}

// close closes the target's idle connections.
func (t *loadTarget) close() { t.client.CloseIdleConnections() }

// openConns is how many connections the client has open to the target: dialled, idle or busy, not yet
// closed. The demo's HTTP server runs a goroutine for each.
func (t *loadTarget) openConns() int64 { return t.conns.Load() }

// countedConn is a connection counted in open until its first Close.
type countedConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

// maxInFlight bounds the requests in flight, and so the connections, of one attack: far more than any
// sustained step needs (rate x latency: 30,000/s x 1 ms is 30), few enough that a stalled server does
// not exhaust this process's file descriptors.
const maxInFlight = 1024

// attack sends rate requests per second for d, round-robin over t's requests, and returns what came
// back.
// each, when not nil, sees every result (from the attack's goroutine).
func attack(ctx context.Context, t *loadTarget, rate int, d time.Duration, each func(*vegeta.Result)) *outcome {
	a := vegeta.NewAttacker(vegeta.Client(t.client), vegeta.MaxBody(0), vegeta.MaxWorkers(maxInFlight))
	stopOnCancel := context.AfterFunc(ctx, func() { a.Stop() })
	defer stopOnCancel()
	o := &outcome{rate: rate, seconds: d.Seconds(), latencies: make([]time.Duration, 0, int(float64(rate)*d.Seconds())+16)}
	var answered int64
	for r := range a.Attack(vegeta.NewStaticTargeter(t.targets...), vegeta.ConstantPacer{Freq: rate, Per: time.Second}, d, "") {
		if each != nil {
			each(r)
		}
		o.latencies = append(o.latencies, r.Latency)
		if r.Code == 0 || r.Code >= 500 {
			o.errors++
		}
		if r.Code != 0 {
			answered++
		}
	}
	t.answered.Add(answered)
	return o
}

// outcome is the raw result of one or more attacks at one rate.
type outcome struct {
	rate      int
	seconds   float64 // of attack
	latencies []time.Duration
	errors    int
	serverCPU float64 // seconds, when measured
}

// add merges o2, an attack at the same rate, into o.
func (o *outcome) add(o2 *outcome) {
	o.seconds += o2.seconds
	o.latencies = append(o.latencies, o2.latencies...)
	o.errors += o2.errors
	o.serverCPU += o2.serverCPU
}

// step summarizes the outcome, and judges whether its rate was sustained.
func (o *outcome) step() LoadStep {
	s := LoadStep{Rate: o.rate, Seconds: o.seconds, Requests: len(o.latencies), Errors: o.errors,
		Latency: summarize(o.latencies), ServerCPUSeconds: o.serverCPU}
	s.AchievedRPS = div(float64(s.Requests-s.Errors), s.Seconds)
	s.Sustained = s.Requests > 0 &&
		float64(s.Errors) <= sustainedMaxErrorShare*float64(s.Requests) &&
		float64(s.Requests-s.Errors) >= sustainedMinShare*float64(o.rate)*s.Seconds &&
		s.Latency.P99 <= sustainedMaxP99
	return s
}

// quantileLevels are the levels of Latency.Quantiles: the shape of the distribution and its tail.
var quantileLevels = []float64{0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1}

// summarize sorts lat and summarizes it.
func summarize(lat []time.Duration) Latency {
	var l Latency
	if len(lat) == 0 {
		return l
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	l.Mean = ms(sum / time.Duration(len(lat)))
	l.P50, l.P90, l.P99, l.P999 = quantile(lat, 0.5), quantile(lat, 0.9), quantile(lat, 0.99), quantile(lat, 0.999)
	l.Max = ms(lat[len(lat)-1])
	for _, q := range quantileLevels {
		l.Quantiles = append(l.Quantiles, Quantile{Q: q, Ms: quantile(lat, q)})
	}
	return l
}

// quantile is the nearest-rank q-quantile of sorted latencies, in ms.
func quantile(sorted []time.Duration, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return ms(sorted[max(0, min(i, len(sorted)-1))])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// searchMax looks for the highest sustained rate above the fixed steps: up by half again until a step
// is not sustained, then halving the gap, at most maxSteps steps. try runs one step.
func searchMax(fixed []LoadStep, maxSteps int, try func(rate int) (LoadStep, error)) (best int, steps []LoadStep, err error) {
	lo, hi := 0, 0 // highest sustained, lowest not sustained above it (0: none yet)
	for _, s := range fixed {
		if s.Sustained && s.Rate > lo {
			lo = s.Rate
		}
	}
	for _, s := range fixed {
		if !s.Sustained && s.Rate > lo && (hi == 0 || s.Rate < hi) {
			hi = s.Rate
		}
	}
	for range maxSteps {
		var next int
		switch {
		case hi == 0:
			next = lo + lo/2
		case lo == 0:
			next = hi / 2
		default:
			next = (lo + hi) / 2
		}
		next = roundRate(next)
		if next <= lo || (hi > 0 && (next >= hi || hi-lo <= max(lo/10, 100))) {
			break
		}
		s, err := try(next)
		if err != nil {
			return lo, steps, err
		}
		steps = append(steps, s)
		if s.Sustained {
			lo = next
		} else {
			hi = next
		}
	}
	return lo, steps, nil
}

// roundRate rounds a rate to two significant digits.
func roundRate(r int) int {
	unit := 1
	for r/unit >= 100 {
		unit *= 10
	}
	return (r + unit/2) / unit * unit
}
