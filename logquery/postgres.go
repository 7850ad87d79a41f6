package logquery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// PostgresConfig configures a Postgres source. Its zero value is valid: every field has a default.
type PostgresConfig struct {
	// Table is the table read, optionally schema-qualified. Default pgsink.DefaultTable.
	Table string
	// PollInterval is how often Follow asks for new rows. Default 500ms.
	PollInterval time.Duration
	// Overlap is how far back in insertion time each poll of Follow looks again, so that a row whose
	// transaction began before the previous poll and committed after it is not missed (inserted_at is
	// its transaction's start). It must outlast the longest write: postgres.write_timeout (10s) and
	// more. Default 30s.
	Overlap time.Duration
	// Lookback bounds the event time of the rows Follow looks for: ts within Lookback of the poll, so
	// that each poll is an index range scan on ts. A row written later than Lookback after its event
	// (a backlog after a long outage) is not followed (Query finds it). Default 15m.
	Lookback time.Duration
}

// Defaults of PostgresConfig.
const (
	DefaultPollInterval = 500 * time.Millisecond
	DefaultOverlap      = 30 * time.Second
	DefaultLookback     = 15 * time.Minute
)

func (c *PostgresConfig) setDefaults() {
	if c.Table == "" {
		c.Table = pgsink.DefaultTable
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Overlap == 0 {
		c.Overlap = DefaultOverlap
	}
	if c.Lookback == 0 {
		c.Lookback = DefaultLookback
	}
}

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// Validate reports the first invalid field, naming its key. Zero fields stand for their defaults.
func (c PostgresConfig) Validate() error {
	switch {
	case c.Table != "" && !tableName.MatchString(c.Table):
		return fmt.Errorf("`table` (%q) must be a table name, optionally schema-qualified: letters, digits and _", c.Table)
	case c.PollInterval < 0:
		return fmt.Errorf("`poll_interval` (%s) must not be negative", c.PollInterval)
	case c.Overlap < 0:
		return fmt.Errorf("`overlap` (%s) must not be negative", c.Overlap)
	case c.Lookback < 0:
		return fmt.Errorf("`lookback` (%s) must not be negative", c.Lookback)
	}
	return nil
}

// Postgres reads the events of sluice's PostgreSQL table (pgsink's). Its queries use only bind
// parameters, and filter on indexed columns first: ts, request_id, (level, ts); trace_id and (status,
// ts) where the schema has them. They name the table, never a partition, so they read a table
// partitioned by ts as well as a plain one (a time range then prunes partitions).
type Postgres struct {
	pool *pgxpool.Pool
	cfg  PostgresConfig
}

var _ Follower = (*Postgres)(nil)

// NewPostgres returns a source reading through pool, which stays the caller's.
func NewPostgres(pool *pgxpool.Pool, cfg PostgresConfig) (*Postgres, error) {
	if pool == nil {
		return nil, errors.New("logquery: NewPostgres needs a pool")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("logquery: invalid config: %w", err)
	}
	return &Postgres{pool: pool, cfg: cfg}, nil
}

// columns are what a query selects: the event's columns (pgsink's), then inserted_at.
var columns = strings.Join(append(pgsink.Columns(), "inserted_at"), ", ")

// sqlQuery is a statement and its arguments.
type sqlQuery struct {
	sql  string
	args []any
}

// where returns the conditions of f (and extra) joined by AND, numbering parameters after args.
func where(f Filter, args []any, extra ...string) (string, []any, error) {
	conds := slices.Clone(extra)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if !f.Since.IsZero() {
		conds = append(conds, "ts >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, "ts < "+arg(f.Until))
	}
	if f.RequestID != "" {
		conds = append(conds, "request_id = "+arg(f.RequestID))
	}
	if f.TraceID != "" {
		conds = append(conds, "trace_id = "+arg(f.TraceID))
	}
	if len(f.Levels) > 0 {
		levels := make([]string, len(f.Levels))
		for i, l := range f.Levels {
			levels[i] = string(l)
		}
		conds = append(conds, "level = ANY("+arg(levels)+"::text[])")
	}
	if len(f.Status) > 0 {
		var or []string
		for _, r := range f.Status {
			if r.Min == r.Max {
				or = append(or, "status = "+arg(r.Min))
			} else {
				or = append(or, "status BETWEEN "+arg(r.Min)+" AND "+arg(r.Max))
			}
		}
		conds = append(conds, "("+strings.Join(or, " OR ")+")")
	}
	if f.Route != "" {
		conds = append(conds, "route = "+arg(f.Route))
	}
	if f.Path != "" {
		g, err := compileGlob(f.Path)
		if err != nil {
			return "", nil, fmt.Errorf("path: %w", err)
		}
		conds = append(conds, "path LIKE "+arg(g.like())+` ESCAPE '\'`)
	}
	if f.Grep != "" {
		p := arg(f.Grep)
		conds = append(conds, "(strpos(message, "+p+") > 0 OR strpos(error, "+p+") > 0)")
	}
	if len(conds) == 0 {
		return "", args, nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args, nil
}

// query returns the statement of Query: with a limit, the newest Limit+1 rows (one more says that
// there are more) newest first; without, every row oldest first.
func (p *Postgres) query(f Filter) (sqlQuery, error) {
	w, args, err := where(f, nil)
	if err != nil {
		return sqlQuery{}, err
	}
	q := "SELECT " + columns + " FROM " + p.cfg.Table + w
	if f.Limit == 0 {
		return sqlQuery{q + " ORDER BY ts, id", args}, nil
	}
	args = append(args, f.Limit+1)
	return sqlQuery{q + " ORDER BY ts DESC, id DESC LIMIT $" + strconv.Itoa(len(args)), args}, nil
}

// Query implements Source.
func (p *Postgres) Query(ctx context.Context, f Filter, fn func(*event.Event) error) (Result, error) {
	if err := f.Validate(); err != nil {
		return Result{}, err
	}
	q, err := p.query(f)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if f.Limit == 0 { // oldest first, straight through
		err := p.rows(ctx, q, func(r row) error {
			res.Events++
			return fn(r.event)
		})
		return res, err
	}
	var newest []*event.Event
	if err := p.rows(ctx, q, func(r row) error {
		newest = append(newest, r.event)
		return nil
	}); err != nil {
		return res, err
	}
	if len(newest) > f.Limit {
		newest, res.More = newest[:f.Limit], true
	}
	for _, e := range slices.Backward(newest) {
		res.Events++
		if err := fn(e); err != nil {
			return res, err
		}
	}
	return res, nil
}

// row is an event as read, and when it was inserted.
type row struct {
	event    *event.Event
	inserted time.Time
}

// rows runs q and calls fn with each row's event.
func (p *Postgres) rows(ctx context.Context, q sqlQuery, fn func(row) error) error {
	rows, err := p.pool.Query(ctx, q.sql, q.args...)
	if err != nil {
		return p.wrap(err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return p.wrap(rows.Err())
}

// wrap names the table in a failed query's error.
func (p *Postgres) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("logquery: read %s: %w", p.cfg.Table, err)
}

// scan reads one row of columns into an event with its JSON encoding in Raw.
func scan(rows pgx.Rows) (row, error) {
	var (
		e                                                                                      event.Event
		level, kind                                                                            string
		service, requestID, traceID, spanID, method, route, path, clientIP, userAgent, errText *string
		source                                                                                 *string
		status                                                                                 *int32
		duration                                                                               *float64
		bytesIn, bytesOut                                                                      *int64
		request, response, attrs                                                               []byte
		inserted                                                                               time.Time
	)
	if err := rows.Scan(&e.ID, &e.TS, &level, &kind, &e.Message, &service, &requestID, &traceID, &spanID,
		&method, &route, &path, &status, &duration, &clientIP, &userAgent, &bytesIn, &bytesOut, &errText,
		&source, &request, &response, &attrs, &inserted); err != nil {
		return row{}, fmt.Errorf("logquery: read a row: %w", err)
	}
	e.TS = e.TS.UTC()
	e.Level, e.Kind = event.Level(level), event.Kind(kind)
	e.Service, e.RequestID, e.TraceID, e.SpanID = text(service), text(requestID), text(traceID), text(spanID)
	e.Method, e.Route, e.Path, e.ClientIP = text(method), text(route), text(path), text(clientIP)
	e.UserAgent, e.Error, e.Source = text(userAgent), text(errText), text(source)
	if status != nil {
		e.Status = int(*status)
	}
	if duration != nil {
		e.DurationMS = *duration
	}
	if bytesIn != nil {
		e.BytesIn = *bytesIn
	}
	if bytesOut != nil {
		e.BytesOut = *bytesOut
	}
	var err error
	if e.Request, err = message(request); err != nil {
		return row{}, fmt.Errorf("logquery: event %s: request: %w", e.ID, err)
	}
	if e.Response, err = message(response); err != nil {
		return row{}, fmt.Errorf("logquery: event %s: response: %w", e.ID, err)
	}
	if len(attrs) > 0 {
		d := json.NewDecoder(bytes.NewReader(attrs))
		d.UseNumber() // numbers as stored: an id of 2^53+1 is not rounded
		if err := d.Decode(&e.Attrs); err != nil {
			return row{}, fmt.Errorf("logquery: event %s: attrs: %w", e.ID, err)
		}
	}
	if e.Raw, err = e.AppendJSON(nil); err != nil {
		return row{}, fmt.Errorf("logquery: %w", err)
	}
	return row{event: &e, inserted: inserted}, nil
}

// text is a nullable text column's value: "" for NULL, as the event's JSON omits it.
func text(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func message(b []byte) (*event.Message, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	m := new(event.Message)
	return m, json.Unmarshal(b, m)
}

// Follow implements Follower. After Query, it polls every PollInterval for the matching rows inserted
// since the previous poll, Overlap included: a row inserted by a transaction that began before a poll
// and committed after it is found by a later poll, and the rows already handed over (remembered by id
// for Overlap) are not handed over again. Within a poll the new rows are handed over oldest first.
func (p *Postgres) Follow(ctx context.Context, f Filter, fn func(*event.Event) error) error {
	err := p.follow(ctx, f, fn)
	if err != nil && ctx.Err() != nil {
		return ctx.Err() // a poll cut by the end of ctx fails with whatever error pgx makes of it
	}
	return err
}

func (p *Postgres) follow(ctx context.Context, f Filter, fn func(*event.Event) error) error {
	if err := f.Validate(); err != nil {
		return err
	}
	cursor, err := p.serverNow(ctx) // before the query: what it cannot see yet, the polls will
	if err != nil {
		return err
	}
	seen := map[uuid.UUID]time.Time{}
	if _, err := p.Query(ctx, f, func(e *event.Event) error {
		seen[e.ID] = cursor // forgotten once the polls look no further back than cursor
		return fn(e)
	}); err != nil {
		return err
	}
	f.Limit = 0
	t := time.NewTicker(p.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		next, err := p.serverNow(ctx)
		if err != nil {
			return err
		}
		from := cursor.Add(-p.cfg.Overlap)
		q, err := p.followQuery(f, from, next.Add(-p.cfg.Lookback))
		if err != nil {
			return err
		}
		if err := p.rows(ctx, q, func(r row) error {
			if _, ok := seen[r.event.ID]; ok {
				return nil
			}
			seen[r.event.ID] = r.inserted
			return fn(r.event)
		}); err != nil {
			return err
		}
		for id, at := range seen {
			if at.Before(from) {
				delete(seen, id) // no later poll looks back that far
			}
		}
		cursor = next
	}
}

// followQuery returns a poll's statement: the matching rows inserted from `from` on, with an event
// time from tsFloor on (and f's), oldest first.
func (p *Postgres) followQuery(f Filter, from, tsFloor time.Time) (sqlQuery, error) {
	if f.Since.IsZero() || f.Since.Before(tsFloor) {
		f.Since = tsFloor
	}
	w, args, err := where(f, []any{from}, "inserted_at >= $1")
	if err != nil {
		return sqlQuery{}, err
	}
	return sqlQuery{"SELECT " + columns + " FROM " + p.cfg.Table + w + " ORDER BY ts, id", args}, nil
}

func (p *Postgres) serverNow(ctx context.Context) (time.Time, error) {
	var t time.Time
	if err := p.pool.QueryRow(ctx, "SELECT now()").Scan(&t); err != nil {
		return t, p.wrap(err)
	}
	return t, nil
}
