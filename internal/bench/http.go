package bench

import (
	"context"
	"fmt"
	"os"
	"time"
)

// runHTTP runs the demo once per request logging mode, each a fresh process on fresh storage, under
// the fixed rates and then the search for its highest sustainable rate.
func runHTTP(ctx context.Context, cfg Config, pl plan, pr *progress) (*HTTPResults, error) {
	res := &HTTPResults{Targets: requestMix, SustainedRule: sustainedRule}
	for _, m := range []struct {
		mode string
		out  *HTTPMode
	}{{LoggingOff, &res.Off}, {LoggingEcho, &res.Echo}, {LoggingSluice, &res.Sluice}} {
		pr.say("http: logging %s", m.mode)
		mode, err := httpMode(ctx, cfg, pl, m.mode, pr)
		*m.out = mode
		if err != nil {
			return res, fmt.Errorf("logging %s: %w", m.mode, err)
		}
		pr.say("http: logging %s: highest sustained rate %d requests/s, server CPU %.1f s, peak RSS %.1f MiB",
			m.mode, mode.MaxSustainedRPS, mode.CPUSeconds, float64(mode.PeakRSSBytes)/(1<<20))
	}
	return res, nil
}

// demoStorage is what a demo process works in: a temporary directory (its log, and its blobs when no
// Azurite is configured), a fresh database, and a fresh container in Azurite. env configures the demo
// to use them; close removes them.
type demoStorage struct {
	dir   string
	env   map[string]string
	close func()
}

func newDemoStorage(ctx context.Context, cfg Config) (demoStorage, error) {
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return demoStorage{}, err
	}
	dsn, drop, err := freshDatabase(ctx, cfg.PostgresDSN)
	if err != nil {
		os.RemoveAll(dir)
		return demoStorage{}, err
	}
	container := uniqueName("bench")
	st := demoStorage{dir: dir, env: map[string]string{
		"SLUICE_POSTGRES_DSN":     dsn,
		"SLUICE_BLOB_CONTAINER":   container,
		"SLUICE_SHUTDOWN_TIMEOUT": "30s",
	}}
	if cfg.Azurite != "" {
		st.env["SLUICE_BLOB_CONNECTION_STRING"] = cfg.Azurite
	} else {
		st.env["SLUICE_BLOB_DIR"] = dir
	}
	st.close = func() {
		drop()
		if cfg.Azurite != "" {
			deleteContainer(cfg.Azurite, container)
		}
		os.RemoveAll(dir)
	}
	return st, nil
}

// httpMode measures one logging mode.
func httpMode(ctx context.Context, cfg Config, pl plan, mode string, pr *progress) (HTTPMode, error) {
	var m HTTPMode
	st, err := newDemoStorage(ctx, cfg)
	if err != nil {
		return m, err
	}
	defer st.close()
	srv, err := startServer(ctx, cfg.ServerBinary, mode, mode, st.dir, cfg.ServerProfileDir, st.env)
	if err != nil {
		return m, err
	}
	defer srv.kill() // after stop below, a no-op
	targets := demoTargets(srv.base)
	pause := pl.step / 10

	step := func(rate int, d time.Duration) (LoadStep, error) {
		before, err := srv.usage()
		if err != nil {
			return LoadStep{}, err
		}
		s := attack(ctx, targets, rate, d, nil)
		after, err := srv.usage()
		if err != nil {
			return s, err
		}
		s.ServerCPUSeconds = after.CPUSeconds - before.CPUSeconds
		pr.say("http: logging %s at %d/s: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %d errors, server CPU %.2f s%s",
			mode, rate, s.Latency.P50, s.Latency.P99, s.Latency.P999, s.Errors, s.ServerCPUSeconds, notSustained(s))
		time.Sleep(pause)
		return s, ctx.Err()
	}

	attack(ctx, targets, pl.rates[0], pl.warmup, nil)
	start, err := srv.usage()
	if err != nil {
		return m, err
	}
	for _, rate := range pl.rates {
		s, err := step(rate, pl.step)
		if err != nil {
			return m, err
		}
		m.Steps = append(m.Steps, s)
	}
	end, err := srv.usage()
	if err != nil {
		return m, err
	}
	m.CPUSeconds, m.PeakRSSBytes = end.CPUSeconds-start.CPUSeconds, end.HWMBytes
	m.MaxSustainedRPS, m.Search, err = searchMax(m.Steps, pl.searchMax, func(rate int) (LoadStep, error) {
		return step(rate, pl.searchStep)
	})
	if err != nil {
		return m, err
	}
	// The demo writes everything accepted before it exits 0: a failure here means sluice lost events.
	return m, srv.stop(time.Minute)
}

func notSustained(s LoadStep) string {
	if s.Sustained {
		return ""
	}
	return " (not sustained)"
}
