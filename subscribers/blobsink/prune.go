package blobsink

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicelog/sluice/subscribers"
)

// Object is a stored object's name and size.
type Object struct {
	Name string
	Size int64
}

// PruneStore is a Store that retention can prune (blob.retention): it lists one level of the name
// hierarchy, lists objects with their sizes, and deletes objects. DirStore and azurestore.Store are
// PruneStores.
type PruneStore interface {
	Store
	// Dirs returns the next path segments of the objects below prefix ("" or a prefix ending in
	// "/"), each with its trailing slash ("2026/", "dead-letter/"), sorted.
	Dirs(ctx context.Context, prefix string) ([]string, error)
	// Objects returns the objects whose names start with prefix, with their sizes, sorted by name.
	Objects(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes an object; one that is not there is not an error.
	Delete(ctx context.Context, name string) error
}

// deleteConcurrency is how many objects of an hour prefix are deleted at once.
const deleteConcurrency = 8

// maxPrefixDepth bounds how deep Prune looks for hour prefixes below route prefixes and dead-letter/.
const maxPrefixDepth = 8

// Prune removes from store every hour prefix, [prefix/]YYYY/MM/DD/HH/, whose hour ends at or before
// cutoff, wherever it is in the store (below a route's prefix, below dead-letter/), and nothing else:
// it relies on the prefix layout only, never on the names of the objects in it. It lists one level
// of names at a time, and looks into a year, a month or a day only when it may hold something to
// remove or the oldest hour kept. With dryRun it deletes nothing and reports the same units. Units are
// named label + the hour prefix, e.g. "logs/2026/11/01/13/"; their Bytes and Objects are counted,
// their Events are not (-1: that would mean reading the blobs). oldest is the start of the oldest hour
// prefix kept (zero when there is none).
func Prune(ctx context.Context, store PruneStore, label string, cutoff time.Time, dryRun bool) (removed []subscribers.PrunedUnit, oldest time.Time, err error) {
	p := &pruning{store: store, label: label, cutoff: cutoff, dryRun: dryRun}
	err = p.walk(ctx, "", 0)
	return p.removed, p.oldest, err
}

type pruning struct {
	store   PruneStore
	label   string
	cutoff  time.Time
	dryRun  bool
	removed []subscribers.PrunedUnit
	oldest  time.Time
}

// worth reports whether the time range [from, to) may hold an hour to remove or the oldest hour kept.
func (p *pruning) worth(from time.Time) bool {
	return from.Before(p.cutoff) || p.oldest.IsZero() || from.Before(p.oldest)
}

// walk looks for years below prefix: a segment of four digits starts the date layout; any other is a
// route's prefix (or dead-letter/) and is looked into.
func (p *pruning) walk(ctx context.Context, prefix string, depth int) error {
	dirs, err := p.store.Dirs(ctx, prefix)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		seg := strings.TrimSuffix(d, "/")
		if y, ok := number(seg, 4, 1, 9999); ok {
			if !p.worth(dateOf([]int{y})) {
				continue
			}
			if err := p.dates(ctx, prefix+d, []int{y}); err != nil {
				return err
			}
		} else if depth < maxPrefixDepth {
			if err := p.walk(ctx, prefix+d, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// dates walks a date prefix: ymd holds the year, then the month, then the day found so far.
func (p *pruning) dates(ctx context.Context, prefix string, ymd []int) error {
	dirs, err := p.store.Dirs(ctx, prefix)
	if err != nil {
		return err
	}
	limits := [][2]int{{1, 12}, {1, 31}, {0, 23}}[len(ymd)-1]
	for _, d := range dirs {
		n, ok := number(strings.TrimSuffix(d, "/"), 2, limits[0], limits[1])
		if !ok {
			continue // not the date layout: not sluice's, never removed
		}
		at := append(append([]int(nil), ymd...), n)
		from := dateOf(at)
		if !p.worth(from) {
			continue // sorted: the rest is newer still, and a kept hour older than it is known
		}
		if len(at) < 4 {
			if err := p.dates(ctx, prefix+d, at); err != nil {
				return err
			}
			continue
		}
		if !from.Add(time.Hour).After(p.cutoff) {
			if err := p.remove(ctx, prefix+d, from); err != nil {
				return err
			}
		} else if p.oldest.IsZero() || from.Before(p.oldest) {
			p.oldest = from
		}
	}
	return nil
}

// dateOf is the start of the year, month, day or hour of ymdh (UTC).
func dateOf(ymdh []int) time.Time {
	v := []int{ymdh[0], 1, 1, 0}
	copy(v, ymdh)
	return time.Date(v[0], time.Month(v[1]), v[2], v[3], 0, 0, 0, time.UTC)
}

// number parses a segment of exactly digits decimal digits within [lo, hi].
func number(s string, digits, lo, hi int) (int, bool) {
	if len(s) != digits {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi || strings.ContainsAny(s, "+-") {
		return 0, false
	}
	return n, true
}

// remove deletes (or with dryRun counts) the objects of one hour prefix.
func (p *pruning) remove(ctx context.Context, prefix string, hour time.Time) error {
	objs, err := p.store.Objects(ctx, prefix)
	if err != nil {
		return err
	}
	u := subscribers.PrunedUnit{Name: p.label + prefix, From: hour, To: hour.Add(time.Hour), Events: -1, Objects: len(objs)}
	for _, o := range objs {
		u.Bytes += o.Size
	}
	if !p.dryRun {
		if err := deleteAll(ctx, p.store, objs); err != nil {
			return fmt.Errorf("blobsink: prune %s%s: %w", p.label, prefix, err)
		}
	}
	p.removed = append(p.removed, u)
	return nil
}

// deleteAll deletes objs, deleteConcurrency at a time.
func deleteAll(ctx context.Context, store PruneStore, objs []Object) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, deleteConcurrency)
	)
	for _, o := range objs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := store.Delete(ctx, o.Name); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Retention implements subscribers.Pruner: blob.retention.
func (o *opened) Retention() time.Duration { return o.settings.Retention }

// Prune implements subscribers.Pruner: it prunes (Prune) each container that the routes write, the
// default one included, in the local directory or in Azure. Units are named container/YYYY/MM/DD/HH/.
func (o *opened) Prune(ctx context.Context, cutoff time.Time, dryRun bool) (subscribers.PruneReport, error) {
	rep := subscribers.PruneReport{Sink: SinkType, Cutoff: cutoff, DryRun: dryRun}
	o.mu.Lock()
	containers := slices.Sorted(maps.Keys(o.containers))
	o.mu.Unlock()
	for _, c := range containers {
		store, closeStore, err := o.pruneStore(ctx, c)
		if err != nil {
			return rep, err
		}
		removed, oldest, err := Prune(ctx, store, c+"/", cutoff, dryRun)
		_ = closeStore()
		rep.Removed = append(rep.Removed, removed...)
		if !oldest.IsZero() && (rep.Oldest.IsZero() || oldest.Before(rep.Oldest)) {
			rep.Oldest = oldest
		}
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// pruneStore opens the store of a container for pruning: the directory (without the clean-up of
// NewDirStore, which belongs to a process's start) or the Azure container.
func (o *opened) pruneStore(ctx context.Context, container string) (PruneStore, func() error, error) {
	if o.settings.ConnectionString == "" {
		return &DirStore{root: filepath.Join(o.settings.Dir, container)}, func() error { return nil }, nil
	}
	openRemote := remote.Load()
	if openRemote == nil {
		return nil, nil, errors.New("blob.connection_string is set, but this program has no Azure store: " +
			`import _ "github.com/sluicelog/sluice/subscribers/blobsink/azurestore"`)
	}
	s, closeStore, err := (*openRemote)(ctx, o.settings.ConnectionString, container)
	if err != nil {
		return nil, nil, err
	}
	ps, ok := s.(PruneStore)
	if !ok {
		_ = closeStore()
		return nil, nil, fmt.Errorf("blobsink: a %T cannot be pruned", s)
	}
	return ps, closeStore, nil
}

var _ subscribers.Pruner = (*opened)(nil)
