package pgsink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicelog/sluice/event"
)

// application_logs is range-partitioned by day on ts (migration 0003): one partition per UTC day,
// named <table>_pYYYYMMDD, holding [day, day+24h). A table converted from the unpartitioned schema
// keeps its rows in one more partition, <table>_legacy, that holds everything before the first day
// partition (FROM MINVALUE). Retention drops whole partitions (Prune); nothing ever DELETEs rows.
//
// The sink makes sure that the partitions of the days it writes exist (Partitions.Ensure): today and
// the next AheadDays days before its first write and then as the days pass, and any other day the
// moment a batch holds an event of it (a replay of old events, a skewed clock), so that no event
// ever fails for want of a partition. A partition is created empty and then attached (CREATE TABLE
// ... (LIKE ...), ALTER TABLE ... ATTACH PARTITION), which takes only a SHARE UPDATE EXCLUSIVE lock on
// the parent: readers and writers of the other partitions go on.

// AheadDays is how many days after today have their partition created ahead of their first event.
const AheadDays = 3

// partitionLockKey serializes the creation and removal of partitions across processes: the
// transaction-level advisory lock that every creator takes ("sluicp").
const partitionLockKey int64 = 0x736c75696370

// dayRange is a partition and its time range, [from, to); from is zero for MINVALUE.
type dayRange struct {
	name     string // the partition's name, e.g. application_logs_p20261202
	qname    string // its schema-qualified name, quoted for SQL
	from, to time.Time
	pending  bool // DETACH CONCURRENTLY was interrupted: finish it with FINALIZE
}

// covers reports whether the partition is the one for rows of time t. One being detached (retention
// is dropping it) still is: an event older than the retention that arrives in that instant fails its
// partition and is dead-lettered, rather than failing its route's writes until the detach ends.
func (r dayRange) covers(t time.Time) bool {
	return (r.from.IsZero() || !t.Before(r.from)) && t.Before(r.to)
}

// Partitions keeps the day partitions of one partitioned table: it knows which days have one, creates
// the missing ones, and drops those past a retention. It is safe for concurrent use.
type Partitions struct {
	q     querier
	table pgx.Identifier

	mu          sync.Mutex
	loaded      bool
	partitioned bool // false: the table is a plain table, every day has room
	ranges      []dayRange
}

// querier is what Partitions needs of a pool.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

func newPartitions(q querier, table pgx.Identifier) *Partitions {
	return &Partitions{q: q, table: table}
}

// day returns the start of t's UTC day.
func day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// partitionName is the partition of the day that starts at d: the table's name with _pYYYYMMDD.
func partitionName(table pgx.Identifier, d time.Time) pgx.Identifier {
	id := slices.Clone(table)
	id[len(id)-1] += "_p" + d.Format("20060102")
	return id
}

// days returns the UTC days of the events (each once, in order) plus today and the AheadDays after it.
func days(events []*event.Event, now time.Time) []time.Time {
	seen := map[time.Time]bool{}
	var out []time.Time
	add := func(d time.Time) {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	today := day(now)
	for i := 0; i <= AheadDays; i++ {
		add(today.AddDate(0, 0, i))
	}
	for _, e := range events {
		if e != nil {
			add(day(e.TS))
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// Ensure makes sure that each day in ds has a partition: it creates those that are missing. A day it
// created or saw is remembered; Forget makes it look again (after a partition was dropped).
func (p *Partitions) Ensure(ctx context.Context, ds []time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loaded && p.missing(ds) == nil {
		return nil
	}
	if err := p.load(ctx); errors.Is(err, errNoTable) {
		return nil // the write says so, with PostgreSQL's own error (42P01)
	} else if err != nil {
		return err
	}
	for _, d := range p.missing(ds) {
		if err := p.create(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// Forget makes the next Ensure read the partitions from the catalog again.
func (p *Partitions) Forget() {
	p.mu.Lock()
	p.loaded = false
	p.mu.Unlock()
}

// missing returns the days of ds that no known partition covers (none for a plain table).
func (p *Partitions) missing(ds []time.Time) []time.Time {
	if !p.partitioned {
		return nil
	}
	var out []time.Time
	for _, d := range ds {
		if !slices.ContainsFunc(p.ranges, func(r dayRange) bool { return r.covers(d) }) {
			out = append(out, d)
		}
	}
	return out
}

// errNoTable is wrapped by load's error when the table does not exist.
var errNoTable = errors.New("no such table")

// load reads the table's partitions from the catalog. It must be called with mu held.
func (p *Partitions) load(ctx context.Context) error {
	partitioned, ranges, err := listPartitions(ctx, p.q, p.table)
	if err != nil {
		return err
	}
	p.partitioned, p.ranges, p.loaded = partitioned, ranges, true
	return nil
}

// The partitions of a table and their bounds, read from the catalog. A bound is printed by
// pg_get_expr in the session's time zone with its offset, so casting it back is exact whatever the
// zone.
const listPartitionsSQL = `SELECT c.relkind = 'p',
	coalesce(array_agg(pc.relname::text ORDER BY pc.relname) FILTER (WHERE pc.oid IS NOT NULL), '{}'),
	coalesce(array_agg(quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) ORDER BY pc.relname)
		FILTER (WHERE pc.oid IS NOT NULL), '{}'),
	coalesce(array_agg((regexp_match(pg_get_expr(pc.relpartbound, pc.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz
		ORDER BY pc.relname) FILTER (WHERE pc.oid IS NOT NULL), '{}'),
	coalesce(array_agg((regexp_match(pg_get_expr(pc.relpartbound, pc.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
		ORDER BY pc.relname) FILTER (WHERE pc.oid IS NOT NULL), '{}'),
	coalesce(array_agg(i.inhdetachpending ORDER BY pc.relname) FILTER (WHERE pc.oid IS NOT NULL), '{}')
FROM pg_class c
LEFT JOIN pg_inherits i ON i.inhparent = c.oid
LEFT JOIN pg_class pc ON pc.oid = i.inhrelid
LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE c.oid = to_regclass($1)
GROUP BY c.relkind`

// listPartitions says whether table is partitioned and returns its partitions in time order.
func listPartitions(ctx context.Context, q querier, table pgx.Identifier) (bool, []dayRange, error) {
	var (
		partitioned bool
		names       []string
		qnames      []string
		froms, tos  []*time.Time
		pending     []bool
	)
	err := q.QueryRow(ctx, listPartitionsSQL, table.Sanitize()).Scan(&partitioned, &names, &qnames, &froms, &tos, &pending)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil, fmt.Errorf("pgsink: %s: %w (run the migrations: sluice migrate)", strings.Join(table, "."), errNoTable)
	}
	if err != nil {
		return false, nil, fmt.Errorf("pgsink: read the partitions of %s: %w", strings.Join(table, "."), err)
	}
	ranges := make([]dayRange, 0, len(names))
	for i, n := range names {
		r := dayRange{name: n, qname: qnames[i], pending: pending[i]}
		if froms[i] != nil {
			r.from = froms[i].UTC()
		}
		if tos[i] == nil {
			continue // not a range partition of ours (a DEFAULT partition): never dropped
		}
		r.to = tos[i].UTC()
		ranges = append(ranges, r)
	}
	slices.SortFunc(ranges, func(a, b dayRange) int { return a.to.Compare(b.to) })
	return partitioned, ranges, nil
}

// create makes the partition of day d: an empty table like the parent, attached for [d, d+24h), in
// one transaction under the partition lock. The range may be cut short at either end by a partition
// that another process made meanwhile (the legacy partition ends at a day boundary, so it never is in
// practice). It must be called with mu held; it adds the range to what is known.
func (p *Partitions) create(ctx context.Context, d time.Time) error {
	name := partitionName(p.table, d)
	from, to := d, d.AddDate(0, 0, 1)
	err := pgx.BeginFunc(ctx, p.q, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"SET LOCAL lock_timeout = '10s'",
			fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", partitionLockKey),
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		// Under the lock: another process may have made it since this one looked.
		_, ranges, err := listPartitions(ctx, tx, p.table)
		if err != nil {
			return err
		}
		for _, r := range ranges {
			if r.covers(d) {
				return nil
			}
		}
		parent := p.table.Sanitize()
		if _, err := tx.Exec(ctx, "CREATE TABLE "+name.Sanitize()+" (LIKE "+parent+" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "ALTER TABLE "+parent+" ATTACH PARTITION "+name.Sanitize()+
			" FOR VALUES FROM ('"+from.Format(time.RFC3339)+"') TO ('"+to.Format(time.RFC3339)+"')")
		return err
	})
	if err != nil {
		return fmt.Errorf("pgsink: create partition %s for %s: %w", name.Sanitize(), d.Format(time.DateOnly), err)
	}
	p.ranges = append(p.ranges, dayRange{name: name[len(name)-1], qname: name.Sanitize(), from: from, to: to})
	return nil
}

// noPartition reports whether err is PostgreSQL's "no partition of relation ... found for row": a check
// violation (23514) that names no constraint.
func noPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23514" && pgErr.ConstraintName == ""
}
