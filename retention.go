package sluice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelog/sluice/config"
	"github.com/sluicelog/sluice/subscribers"
)

// Retention: each opened sink type that keeps events by time (subscribers.Pruner: PostgreSQL's day
// partitions, the archive's hour prefixes) is pruned to its retention (postgres.retention,
// blob.retention) by the running pipeline, once at start and then every RetentionInterval, and by
// Prune (`sluice prune`), through the same code. One process at a time prunes: the first opened type
// that can hold a lock shared by every process (subscribers.PruneLocker: a PostgreSQL advisory lock)
// is asked for it first, and a process that does not get it skips the run. Without PostgreSQL there is
// no such lock: each process prunes the archive itself, which is harmless (deleting what another
// process deleted is not an error) and costs only the listing.

// RetentionInterval is how often the running pipeline prunes.
const RetentionInterval = time.Hour

// ErrPruneLocked is returned by Prune when another process holds the prune lock.
var ErrPruneLocked = errors.New("sluice: another process is pruning (the PostgreSQL advisory lock is held)")

// PruneOptions says what Prune removes.
type PruneOptions struct {
	// Sinks are the sink types to prune ("postgres", "blob"); empty: every one the routes name that
	// can be pruned.
	Sinks []string
	// OlderThan, when positive, replaces each store's retention: what ends before now minus OlderThan
	// is removed, also from a store whose retention is 0.
	OlderThan time.Duration
	// DryRun removes nothing and reports what would be removed.
	DryRun bool
	// Now is the time the cutoffs are counted from; zero: time.Now().
	Now time.Time
}

// Prune opens the sink types that cfg's routes name, without starting a pipeline, removes from each
// store that can be pruned what is older than its retention (or opts.OlderThan), and returns one
// report per store, in the order of the sink type names. A store whose retention is 0 is skipped
// unless opts.OlderThan is set. It takes the prune lock unless opts.DryRun (ErrPruneLocked when
// another process holds it). It is what `sluice prune` runs.
func Prune(ctx context.Context, cfg Config, opts PruneOptions, log *slog.Logger) ([]subscribers.PruneReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	opened := map[string]subscribers.Opened{}
	defer func() {
		for _, o := range opened {
			_ = o.Close()
		}
	}()
	sections := cfg.SinkSections()
	for _, r := range cfg.EffectiveRoutes() {
		if len(opts.Sinks) > 0 && !slices.Contains(opts.Sinks, r.Sink) {
			continue
		}
		o := opened[r.Sink]
		if o == nil {
			t, ok := subscribers.LookupSinkType(r.Sink)
			if !ok {
				return nil, fmt.Errorf("sluice: route %q: unknown sink %q", r.Name, r.Sink)
			}
			var err error
			if o, err = t.Open(ctx, sections[r.Sink], log.With("sink", r.Sink)); err != nil {
				return nil, fmt.Errorf("sluice: open %s: %w", r.Sink, err)
			}
			opened[r.Sink] = o
		}
		// The route's store (its container) is one of those to prune.
		if _, err := o.Sink(subscribers.Route{Name: r.Name, Options: r.Options}); err != nil {
			return nil, fmt.Errorf("sluice: route %q: %w", r.Name, err)
		}
	}
	for _, s := range opts.Sinks {
		if opened[s] == nil {
			return nil, fmt.Errorf("sluice: no route writes to sink %q (routes write to %v)", s, routeSinks(cfg))
		}
		if _, ok := opened[s].(subscribers.Pruner); !ok {
			return nil, fmt.Errorf("sluice: sink %q keeps no events by time: nothing to prune", s)
		}
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	results, err := pruneOpened(ctx, opened, func(pr subscribers.Pruner) time.Duration {
		if opts.OlderThan > 0 {
			return opts.OlderThan
		}
		return pr.Retention()
	}, now, opts.DryRun)
	reports := make([]subscribers.PruneReport, len(results))
	errs := []error{err}
	for i, r := range results {
		reports[i] = r.report
		errs = append(errs, r.err)
	}
	return reports, errors.Join(errs...)
}

func routeSinks(cfg config.Config) []string {
	var out []string
	for _, r := range cfg.EffectiveRoutes() {
		if !slices.Contains(out, r.Sink) {
			out = append(out, r.Sink)
		}
	}
	return out
}

// pruneResult is one store's prune.
type pruneResult struct {
	report subscribers.PruneReport
	err    error
}

// pruneOpened prunes each opened type that is a Pruner with a positive retention (as retention says),
// in the order of their names, under the prune lock unless dryRun (ErrPruneLocked when another
// process holds it). A store's error does not stop the others.
func pruneOpened(ctx context.Context, opened map[string]subscribers.Opened, retention func(subscribers.Pruner) time.Duration,
	now time.Time, dryRun bool) ([]pruneResult, error) {
	names := slices.Sorted(maps.Keys(opened))
	if !dryRun {
		for _, name := range names {
			l, ok := opened[name].(subscribers.PruneLocker)
			if !ok {
				continue
			}
			unlock, got, err := l.TryPruneLock(ctx)
			if err != nil {
				return nil, fmt.Errorf("sluice: prune lock (%s): %w", name, err)
			}
			if !got {
				return nil, ErrPruneLocked
			}
			defer unlock()
			break
		}
	}
	var results []pruneResult
	for _, name := range names {
		pr, ok := opened[name].(subscribers.Pruner)
		if !ok {
			continue
		}
		keep := retention(pr)
		if keep <= 0 {
			continue
		}
		rep, err := pr.Prune(ctx, now.Add(-keep), dryRun)
		rep.Sink = name
		if err != nil {
			err = fmt.Errorf("sluice: prune %s: %w", name, err)
		}
		results = append(results, pruneResult{rep, err})
	}
	return results, nil
}

// retentionLoop prunes the pipeline's stores once at start and then every RetentionInterval, until
// stopped.
type retentionLoop struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// retentionMetrics say what retention removed, when it last ran, and the oldest data kept, per sink
// type.
type retentionMetrics struct {
	units, events, bytes *prometheus.CounterVec
	lastRun, oldest      *prometheus.GaugeVec
	errors               *prometheus.CounterVec
}

func newRetentionMetrics(reg prometheus.Registerer) *retentionMetrics {
	m := &retentionMetrics{
		units: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_retention_pruned_units_total",
			Help: "Units of storage removed by retention (PostgreSQL partitions, archive hour prefixes), by sink type."}, []string{"sink"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_retention_pruned_events_total",
			Help: "Events removed by retention where the store knows them (PostgreSQL rows), by sink type."}, []string{"sink"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_retention_pruned_bytes_total",
			Help: "Bytes removed by retention (partition size on disk, blob sizes), by sink type."}, []string{"sink"}),
		lastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_retention_last_run_timestamp_seconds",
			Help: "When retention last pruned the store successfully (Unix time), by sink type."}, []string{"sink"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_retention_oldest_timestamp_seconds",
			Help: "The time of the oldest data kept after the last prune (Unix time; 0: the store is empty), by sink type."}, []string{"sink"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_retention_errors_total",
			Help: "Prune runs that failed, by sink type."}, []string{"sink"}),
	}
	reg.MustRegister(m.units, m.events, m.bytes, m.lastRun, m.oldest, m.errors)
	return m
}

// startRetention starts the pipeline's retention loop when one of its opened sink types has a
// retention; it returns nil otherwise.
func (p *Pipeline) startRetention() *retentionLoop {
	var pruners []string
	for name, o := range p.opened {
		if pr, ok := o.(subscribers.Pruner); ok && pr.Retention() > 0 {
			pruners = append(pruners, name)
		}
	}
	if len(pruners) == 0 {
		return nil
	}
	m := newRetentionMetrics(p.metrics.reg)
	ctx, cancel := context.WithCancel(context.Background())
	l := &retentionLoop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(RetentionInterval)
		defer t.Stop()
		for {
			p.pruneOnce(ctx, m)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return l
}

// pruneOnce runs one prune of the pipeline's stores, logs what it removed and updates the metrics.
func (p *Pipeline) pruneOnce(ctx context.Context, m *retentionMetrics) {
	results, err := pruneOpened(ctx, p.opened, subscribers.Pruner.Retention, time.Now(), false)
	if errors.Is(err, ErrPruneLocked) {
		p.log.Debug("retention: another process is pruning; skipped")
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("retention: prune failed", "error", err)
		}
		return
	}
	for _, res := range results {
		r := res.report
		n, _ := r.Events()
		m.units.WithLabelValues(r.Sink).Add(float64(len(r.Removed)))
		m.events.WithLabelValues(r.Sink).Add(float64(n))
		m.bytes.WithLabelValues(r.Sink).Add(float64(r.Bytes()))
		if len(r.Removed) > 0 {
			p.log.Info("retention: pruned", "sink", r.Sink, "cutoff", r.Cutoff.UTC().Format(time.RFC3339),
				"units", len(r.Removed), "first", r.Removed[0].Name, "last", r.Removed[len(r.Removed)-1].Name,
				"events", n, "bytes", r.Bytes())
		}
		if res.err != nil {
			m.errors.WithLabelValues(r.Sink).Inc()
			if ctx.Err() == nil {
				p.log.Warn("retention: prune failed", "sink", r.Sink, "error", res.err)
			}
			continue
		}
		m.lastRun.WithLabelValues(r.Sink).SetToCurrentTime()
		oldest := 0.0
		if !r.Oldest.IsZero() {
			oldest = float64(r.Oldest.UnixNano()) / 1e9
		}
		m.oldest.WithLabelValues(r.Sink).Set(oldest)
	}
}

// stop cancels the loop (a prune under way is cancelled) and waits for it until ctx ends.
func (l *retentionLoop) stop(ctx context.Context) {
	if l == nil {
		return
	}
	l.cancel()
	select {
	case <-l.done:
	case <-ctx.Done():
	}
}
