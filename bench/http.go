package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// runHTTP runs the demo once per request logging mode, each a process of its own on storage of its own.
// The fixed rates are interleaved: each rate is split into rounds, and in every round each mode takes
// its turn (in a rotating order), so that whatever else the machine does weighs on every mode alike.
// Then each mode in turn is searched for the highest rate it sustains.
func runHTTP(ctx context.Context, cfg Config, pl plan, pr *progress) (*HTTPResults, error) {
	res := &HTTPResults{Targets: requestMix, SustainedRule: sustainedRule}
	modes := []struct {
		name string
		out  *HTTPMode
	}{{LoggingOff, &res.Off}, {LoggingEcho, &res.Echo}, {LoggingEchoFile, &res.EchoFile}, {LoggingSluice, &res.Sluice}}
	demos := make([]*demo, len(modes))
	defer func() {
		for _, d := range demos {
			if d != nil {
				d.close()
			}
		}
	}()
	for i, m := range modes {
		d, err := startDemo(ctx, cfg, m.name, m.name)
		if err != nil {
			return res, fmt.Errorf("logging %s: %w", m.name, err)
		}
		demos[i] = d
		attack(ctx, d.target, pl.rates[0], pl.warmup, nil)
	}

	start := make([]procUsage, len(demos))
	for i, d := range demos {
		u, err := d.srv.usage()
		if err != nil {
			return res, err
		}
		start[i] = u
	}
	rounds := max(1, int(pl.step/pl.round))
	for _, rate := range pl.rates {
		outs := make([]*outcome, len(demos))
		for round := range rounds {
			if rounds > 1 {
				pr.say("http: %d/s, round %d of %d", rate, round+1, rounds)
			}
			for k := range demos {
				i := (round + k) % len(demos)
				o, err := demos[i].attack(ctx, rate, pl.round)
				if err != nil {
					return res, err
				}
				if outs[i] == nil {
					outs[i] = o
				} else {
					outs[i].add(o)
				}
			}
		}
		for i, m := range modes {
			s := outs[i].step()
			m.out.Steps = append(m.out.Steps, s)
			pr.say("http: logging %-9s at %d/s: %s", m.name, rate, stepLine(s))
		}
	}
	for i, m := range modes {
		end, err := demos[i].srv.usage()
		if err != nil {
			return res, err
		}
		m.out.CPUSeconds, m.out.PeakRSSBytes = end.CPUSeconds-start[i].CPUSeconds, end.HWMBytes
	}

	for i, m := range modes {
		d := demos[i]
		best, search, err := searchMax(m.out.Steps, pl.searchMax, func(rate int) (LoadStep, error) {
			o, err := d.attack(ctx, rate, pl.searchStep)
			if err != nil {
				return LoadStep{}, err
			}
			s := o.step()
			pr.say("http: logging %-9s at %d/s: %s", m.name, rate, stepLine(s))
			return s, nil
		})
		m.out.MaxSustainedRPS, m.out.Search = best, search
		if err != nil {
			return res, err
		}
		pr.say("http: logging %s: highest sustained rate %d requests/s, server CPU %.1f s over the fixed rates, peak RSS %.1f MiB",
			m.name, best, m.out.CPUSeconds, float64(m.out.PeakRSSBytes)/(1<<20))
	}
	// Each demo writes everything accepted before it exits 0: a failure here means sluice lost events.
	// The request log file must then have a line for every request answered.
	for i, d := range demos {
		err := d.srv.stop(time.Minute)
		if err == nil && modes[i].name == LoggingEchoFile {
			var lines, size int64
			lines, size, err = checkRequestLog(filepath.Join(d.st.dir, RequestLogFile), d.target.answered.Load())
			if err == nil {
				pr.say("http: logging %s: %s JSON lines, %.0f B each, in %s", modes[i].name, count(float64(lines)),
					div(float64(size), float64(lines)), RequestLogFile)
			}
		}
		d.close()
		demos[i] = nil
		if err != nil {
			return res, fmt.Errorf("logging %s: %w", modes[i].name, err)
		}
	}
	return res, nil
}

// checkRequestLog checks that the request log file at path is JSON lines, at least one for each of the
// answered requests (a request whose client gave up may have been logged too), and returns how many
// lines and bytes it holds.
func checkRequestLog(path string, answered int64) (lines, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines++
		size += int64(len(sc.Bytes())) + 1
		if !json.Valid(sc.Bytes()) {
			return lines, size, fmt.Errorf("%s: line %d is not JSON: %.200q", path, lines, sc.Bytes())
		}
	}
	if err := sc.Err(); err != nil {
		return lines, size, fmt.Errorf("%s: %w", path, err)
	}
	if lines < answered {
		return lines, size, fmt.Errorf("%s: %d lines for %d requests answered", path, lines, answered)
	}
	return lines, size, nil
}

func stepLine(s LoadStep) string {
	line := fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %d errors, server CPU %.2f s",
		s.Latency.P50, s.Latency.P99, s.Latency.P999, s.Errors, s.ServerCPUSeconds)
	if !s.Sustained {
		line += " (not sustained)"
	}
	return line
}

// demo is a running demo process, its storage, and the requests sent to it.
type demo struct {
	st     demoStorage
	srv    *server
	target *loadTarget
}

// startDemo starts the demo with a logging mode on fresh storage; label names its log and profiles.
func startDemo(ctx context.Context, cfg Config, mode, label string) (*demo, error) {
	st, err := newDemoStorage(ctx, cfg)
	if err != nil {
		return nil, err
	}
	srv, err := startServer(ctx, cfg.ServerBinary, mode, label, st.dir, cfg.ServerProfileDir, st.env, cfg.ServerEnv)
	if err != nil {
		st.close()
		return nil, err
	}
	return &demo{st: st, srv: srv, target: newLoadTarget(srv.base)}, nil
}

// attack loads the demo at rate for d, measuring its CPU time meanwhile.
func (d *demo) attack(ctx context.Context, rate int, dur time.Duration) (*outcome, error) {
	before, err := d.srv.usage()
	if err != nil {
		return nil, err
	}
	o := attack(ctx, d.target, rate, dur, nil)
	after, err := d.srv.usage()
	if err != nil {
		return nil, err
	}
	o.serverCPU = after.CPUSeconds - before.CPUSeconds
	return o, ctx.Err()
}

// close kills the demo if it still runs, and removes its storage.
func (d *demo) close() {
	d.target.close()
	d.srv.kill()
	d.st.close()
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
