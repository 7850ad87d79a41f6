package bench

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// storageDown says how the overload scenario takes storage away: after the start, as it happens in
// production, so that the same process under the same load gives the baseline with storage up.
const storageDown = "PostgreSQL and Azurite are reached through loopback proxies, cut after the baseline: " +
	"from then on their ports refuse connections and every open connection is closed"

// runOverload runs the demo with sluice at rate: a baseline with storage up, then storage down for the
// configured duration, sampling the server each second.
func runOverload(ctx context.Context, cfg Config, pl plan, rate int, pr *progress) (*OverloadResults, error) {
	res := &OverloadResults{Rate: rate, StorageDown: storageDown}
	st, err := newDemoStorage(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer st.close()
	pgProxy, err := proxyTo(st.env, "SLUICE_POSTGRES_DSN", postgresHost, withPostgresHost)
	if err != nil {
		return nil, err
	}
	defer pgProxy.cutOff()
	blobProxy, err := proxyTo(st.env, "SLUICE_BLOB_CONNECTION_STRING", blobEndpointHost, withBlobEndpointHost)
	if err != nil {
		return nil, err
	}
	defer blobProxy.cutOff()
	st.env["SLUICE_SHUTDOWN_TIMEOUT"] = "2s" // what is queued cannot be written anyway

	srv, err := startServer(ctx, cfg.ServerBinary, LoggingSluice, "overload", st.dir, cfg.ServerProfileDir, st.env, cfg.ServerEnv)
	if err != nil {
		return nil, err
	}
	defer srv.kill()
	target := newLoadTarget(srv.base)
	defer target.close()
	attack(ctx, target, min(rate, pl.rates[0]), pl.warmup, nil)
	pr.say("overload: baseline at %d/s for %v, storage up", rate, pl.baseline)
	res.Baseline = attack(ctx, target, rate, pl.baseline, nil).step()
	pr.say("overload: baseline p99 %.2f ms; cutting PostgreSQL and Azurite off; %d/s for %v", res.Baseline.Latency.P99, rate, pl.overload)
	pgProxy.cutOff()
	blobProxy.cutOff()

	start := time.Now()
	var (
		samples []OverloadSample  // appended by the sampler; read once it has stopped
		buckets [][]time.Duration // latencies by the second in which their request ended
	)
	sample := func(second int) {
		conns := target.openConns()
		m, err := srv.metrics(ctx)
		// The count may move during the scrape: the fewer, not to flatter the goroutines besides them.
		conns = min(conns, target.openConns())
		u, uerr := srv.usage()
		if err != nil || uerr != nil {
			return
		}
		s := OverloadSample{Second: second, RSSBytes: u.RSSBytes, Goroutines: int(m.byName["go_goroutines"]), HTTPConnections: int(conns),
			HeapInuseBytes: int64(m.byName["go_memstats_heap_inuse_bytes"]), StackInuseBytes: int64(m.byName["go_memstats_stack_inuse_bytes"]),
			QueueDepth: m.byName["sluice_queue_depth"], EventsDropped: m.byName["sluice_events_dropped_total"]}
		samples = append(samples, s)
		pr.say("overload: %2ds RSS %.1f MiB (heap %.1f, stacks %.1f), %d goroutines (%d besides %d HTTP connections), queue %.0f, %.0f dropped",
			second, float64(s.RSSBytes)/(1<<20), float64(s.HeapInuseBytes)/(1<<20), float64(s.StackInuseBytes)/(1<<20),
			s.Goroutines, s.goroutinesBesidesConnections(), s.HTTPConnections, s.QueueDepth, s.EventsDropped)
	}
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	sample(0)
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for second := 1; ; second++ {
			select {
			case <-sampling:
				return
			case <-t.C:
				sample(second)
			}
		}
	}()
	res.Overload = attack(ctx, target, rate, pl.overload, func(r *vegeta.Result) {
		i := int(r.End().Sub(start) / time.Second)
		for len(buckets) <= i {
			buckets = append(buckets, nil)
		}
		buckets[i] = append(buckets[i], r.Latency)
	}).step()
	close(sampling)
	<-sampled

	m, err := srv.metrics(ctx)
	if err != nil {
		return res, err
	}
	u, err := srv.usage()
	if err != nil {
		return res, err
	}
	res.PeakRSSBytes = u.HWMBytes
	res.EventsPublished = m.byName["sluice_events_published_total"]
	res.EventsDropped = m.byName["sluice_events_dropped_total"]
	res.DroppedByReason = m.byLabel("sluice_events_dropped_total", "reason")
	besides := 0
	for i := range samples {
		s := &samples[i]
		if s.Second > 0 && s.Second-1 < len(buckets) {
			b := buckets[s.Second-1]
			s.Requests, s.P99Ms = len(b), summarize(b).P99
		}
		res.MaxRSSBytes = max(res.MaxRSSBytes, s.RSSBytes)
		res.MaxGoroutines = max(res.MaxGoroutines, s.Goroutines)
		besides = max(besides, s.goroutinesBesidesConnections())
	}
	res.Samples = samples
	if len(samples) > 0 {
		res.MaxGoroutinesBesidesConnections = &besides
	}
	pr.say("overload: p99 %.2f ms (baseline %.2f ms), peak RSS %.1f MiB, at most %d goroutines (%d besides HTTP connections), %.0f of %.0f events dropped",
		res.Overload.Latency.P99, res.Baseline.Latency.P99, float64(res.PeakRSSBytes)/(1<<20), res.MaxGoroutines,
		besides, res.EventsDropped, res.EventsPublished+res.EventsDropped)
	// Storage is down: the demo cannot write what it holds and exits 1 after its shutdown timeout.
	_ = srv.stop(30 * time.Second)
	return res, nil
}

// proxyTo starts a proxy to the host of the storage address in env[key] and points env[key] at it.
func proxyTo(env map[string]string, key string, host func(string) (string, error), withHost func(string, string) string) (*proxy, error) {
	target, err := host(env[key])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	p, err := startProxy(target)
	if err != nil {
		return nil, err
	}
	env[key] = withHost(env[key], p.addr())
	return p, nil
}

// postgresHost is the host:port of a URL DSN.
func postgresHost(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", err
	}
	if u.Port() == "" {
		return u.Hostname() + ":5432", nil
	}
	return u.Host, nil
}

func withPostgresHost(dsn, host string) string {
	u, _ := url.Parse(dsn)
	u.Host = host
	return u.String()
}

// blobEndpointHost is the host:port of an Azure connection string's BlobEndpoint (Azurite's).
func blobEndpointHost(cs string) (string, error) {
	for _, kv := range strings.Split(cs, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "BlobEndpoint" {
			u, err := url.Parse(v)
			if err != nil {
				return "", err
			}
			return u.Host, nil
		}
	}
	return "", fmt.Errorf("no BlobEndpoint in the connection string: the overload scenario needs Azurite's")
}

func withBlobEndpointHost(cs, host string) string {
	parts := strings.Split(cs, ";")
	for i, kv := range parts {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "BlobEndpoint" {
			u, _ := url.Parse(v)
			u.Host = host
			parts[i] = k + "=" + u.String()
		}
	}
	return strings.Join(parts, ";")
}
