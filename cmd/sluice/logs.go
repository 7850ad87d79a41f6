package main

// sluice logs: the events stored in PostgreSQL or in the archive, filtered, as a table or NDJSON, and
// followed as they are written. The reading is package logquery's; this file parses the flags, opens
// the source the configuration names and renders what it hands over.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/logquery"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/console"
)

// Defaults of sluice logs.
const (
	defaultLogsLimit    = 1000
	defaultArchiveSince = 24 * time.Hour
)

// logsFlags are the flags of sluice logs.
type logsFlags struct {
	filter                logquery.Filter
	since, until          string
	jsonOut, wide, follow bool
	archive               bool
	container, prefix     string
	limitSet              bool
}

// flagLogs registers the flags of sluice logs when cmd is "logs".
func flagLogs(fs *flag.FlagSet, cmd string) *logsFlags {
	f := &logsFlags{}
	if cmd != "logs" {
		return f
	}
	fs.StringVar(&f.since, "since", "", "events from this `time` on: a duration before now (15m, 2h, 3d) or a time "+
		"(2026-12-02T07:30:00Z, 2026-12-02 07:30, 2026-12-02; UTC unless it has an offset). The archive's default: 24h")
	fs.StringVar(&f.until, "until", "", "events before this `time` (same forms as --since); default now")
	fs.Func("level", "`levels`: warn is WARN and above, =warn WARN only, info,error those two", func(s string) (err error) {
		f.filter.Levels, err = logquery.ParseLevels(s)
		return err
	})
	fs.Func("status", "HTTP `statuses`: 500, 5xx, 400-499, or a list: 404,5xx", func(s string) (err error) {
		f.filter.Status, err = logquery.ParseStatus(s)
		return err
	})
	fs.StringVar(&f.filter.Path, "path", "", "request path `glob`: * any characters (slashes too), ? one, \\ escapes")
	fs.StringVar(&f.filter.Route, "route", "", "the route `template`, exactly (/users/:id)")
	fs.StringVar(&f.filter.RequestID, "request-id", "", "one request's `id`: its HTTP event and its application logs")
	fs.StringVar(&f.filter.TraceID, "trace-id", "", "one trace's `id`")
	fs.StringVar(&f.filter.Grep, "grep", "", "`text` in the message or the error (case-sensitive)")
	fs.Func("limit", "show the newest `n` matching events (0: all); default "+strconv.Itoa(defaultLogsLimit), func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a number, 0 or more")
		}
		f.filter.Limit, f.limitSet = n, true
		return nil
	})
	fs.BoolVar(&f.jsonOut, "json", false, "print NDJSON: one event per line, the stored field names")
	fs.BoolVar(&f.wide, "wide", false, "also print each event's headers, query, bodies, attributes and the rest")
	fs.BoolVar(&f.wide, "show", false, "same as --wide")
	fs.BoolVar(&f.follow, "follow", false, "after the newest events, print new ones as they are written, until Ctrl-C (PostgreSQL only)")
	fs.BoolVar(&f.follow, "f", false, "same as --follow")
	fs.BoolVar(&f.archive, "archive", false, "read the archive (blob.connection_string or blob.dir) instead of PostgreSQL")
	fs.StringVar(&f.container, "container", "", "the archive's `container` (default blob.container)")
	fs.StringVar(&f.prefix, "prefix", "", "the archive route's `prefix` inside the container (its options.prefix)")
	return f
}

// logsExit is how sluice logs ends other than with success: 1 nothing matched, 2 an error.
type logsExit struct {
	code int
	err  error
}

func (e *logsExit) Error() string { return e.err.Error() }
func (e *logsExit) Unwrap() error { return e.err }

var errNothingMatched = errors.New("no events matched")

// filterAt returns the filter of the flags, the time bounds read against now.
func (f *logsFlags) filterAt(now time.Time) (logquery.Filter, error) {
	q := f.filter
	if !f.limitSet {
		q.Limit = defaultLogsLimit
	}
	var err error
	switch {
	case f.since != "":
		if q.Since, err = logquery.ParseTime(f.since, now); err != nil {
			return q, fmt.Errorf("--since: %w", err)
		}
	case f.archive:
		q.Since = now.Add(-defaultArchiveSince)
	}
	if f.until != "" {
		if q.Until, err = logquery.ParseTime(f.until, now); err != nil {
			return q, fmt.Errorf("--until: %w", err)
		}
	}
	if f.follow && f.archive {
		return q, errors.New("--follow reads PostgreSQL only, not the archive")
	}
	if f.follow && f.until != "" {
		return q, errors.New("--follow shows new events: it takes no --until")
	}
	if !f.archive && (f.container != "" || f.prefix != "") {
		return q, errors.New("--container and --prefix are the archive's: add --archive")
	}
	if err := q.Validate(); err != nil {
		return q, err
	}
	return q, nil
}

// logs runs sluice logs.
func logs(ctx context.Context, file string, f *logsFlags, stdout, stderr io.Writer) error {
	filter, err := f.filterAt(time.Now())
	if err != nil {
		return &configError{err}
	}
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	out := newLogsPrinter(stdout, f.jsonOut, f.wide, colorOn(stdout))
	if f.archive {
		return logsFromArchive(ctx, cfg, f, filter, out, stderr)
	}
	pool, err := connect(ctx, cfg.Postgres.DSN)
	if err != nil {
		return &logsExit{2, err}
	}
	defer pool.Close()
	src, err := logquery.NewPostgres(pool, logquery.PostgresConfig{})
	if err != nil {
		return &logsExit{2, err}
	}
	if f.follow {
		err := src.Follow(ctx, filter, out.print)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil // Ctrl-C: the end of a follow
		}
		return &logsExit{2, noTable(err, cfg.Postgres.DSN)}
	}
	res, err := src.Query(ctx, filter, out.print)
	return logsEnd(res, noTable(err, cfg.Postgres.DSN), filter, stderr)
}

// noTable says what to do when the database has no application_logs table.
func noTable(err error, dsn string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" { // undefined_table
		return err
	}
	db := "the database"
	if pc, perr := pgconn.ParseConfig(dsn); perr == nil {
		db = fmt.Sprintf("database %s at %s:%d", pc.Database, pc.Host, pc.Port)
	}
	return fmt.Errorf("%s has no sluice tables: is postgres.dsn (SLUICE_POSTGRES_DSN) the database the service writes to? "+
		"(sluice migrate creates them): %w", db, err)
}

// logsEnd turns a query's outcome into the command's.
func logsEnd(res logquery.Result, err error, filter logquery.Filter, stderr io.Writer) error {
	switch {
	case err != nil:
		return &logsExit{2, err}
	case res.Events == 0:
		return &logsExit{1, errNothingMatched}
	case res.More:
		fmt.Fprintf(stderr, "sluice logs: more events matched than --limit %d: these are the newest (--limit 0 shows all)\n", filter.Limit)
	}
	return nil
}

func logsFromArchive(ctx context.Context, cfg sluice.Config, f *logsFlags, filter logquery.Filter, out *logsPrinter, stderr io.Writer) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	store, closeStore, err := blobsink.OpenStore(octx, cfg.Blob, f.container)
	cancel()
	if err != nil {
		return &logsExit{2, fmt.Errorf("the archive: %w", err)}
	}
	defer closeStore()
	src, err := logquery.NewArchive(store, logquery.ArchiveConfig{Prefix: f.prefix})
	if err != nil {
		return &configError{err}
	}
	res, err := src.Scan(ctx, filter, out.print)
	if res.BadLines > 0 {
		fmt.Fprintf(stderr, "sluice logs: skipped %d lines of the archive that are not events (the first: %s)\n", res.BadLines, res.FirstBad)
	}
	return logsEnd(res.Result, err, filter, stderr)
}

// connect opens a pool on dsn and checks that PostgreSQL answers; its error names the host.
func connect(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	where := "PostgreSQL"
	if pc, err := pgconn.ParseConfig(dsn); err == nil {
		where = fmt.Sprintf("PostgreSQL at %s:%d", pc.Host, pc.Port)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("%s (postgres.dsn, SLUICE_POSTGRES_DSN): %w", where, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s is not reachable (postgres.dsn, SLUICE_POSTGRES_DSN): %w", where, err)
	}
	return pool, nil
}

// colorOn reports whether w is a terminal and NO_COLOR is not set.
func colorOn(w io.Writer) bool {
	for _, kv := range environ() {
		if v, ok := strings.CutPrefix(kv, "NO_COLOR="); ok && v != "" {
			return false
		}
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// logsPrinter renders events: NDJSON, or a table with, for --wide, each event's details below it.
type logsPrinter struct {
	w             io.Writer
	json, wide    bool
	color         bool
	buf           []byte
	headerPrinted bool
}

func newLogsPrinter(w io.Writer, jsonOut, wide, color bool) *logsPrinter {
	return &logsPrinter{w: w, json: jsonOut, wide: wide, color: color}
}

// The table's columns: time (UTC, to the millisecond), level, status ("app" for an application log),
// duration, request id, then what happened.
const (
	tableTime      = "2006-01-02 15:04:05.000"
	requestIDWidth = 36 // a UUID, the ids the middleware makes
	tableHeader    = "TIME (UTC)               LEVEL  STATUS  DURATION  REQUEST ID                            WHAT\n"
)

func (p *logsPrinter) print(e *event.Event) error {
	b := p.buf[:0]
	if p.json {
		b = append(b, e.Raw...)
		b = append(b, '\n')
	} else {
		if !p.headerPrinted {
			b = append(b, tableHeader...)
			p.headerPrinted = true
		}
		b = appendRow(b, e, p.color)
		if p.wide {
			b = appendDetails(b, e)
		}
	}
	p.buf = b
	if _, err := p.w.Write(b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// appendRow appends an event's line of the table.
func appendRow(b []byte, e *event.Event, color bool) []byte {
	b = e.TS.UTC().AppendFormat(b, tableTime)
	b = append(b, "  "...)
	b = console.AppendLevel(b, e.Level, color)
	b = append(b, "  "...)
	switch {
	case e.Kind == event.KindApp:
		b = pad(b, "app", 6)
	case e.Status != 0:
		b = pad(b, strconv.Itoa(e.Status), 6)
	default:
		b = pad(b, "-", 6)
	}
	b = append(b, "  "...)
	d := ""
	if e.Kind == event.KindHTTP {
		d = formatMillis(e.DurationMS)
	}
	b = append(b, strings.Repeat(" ", max(0, 8-len(d)))...)
	b = append(b, d...)
	b = append(b, "  "...)
	n := len(b)
	if e.RequestID == "" {
		b = append(b, '-')
	} else {
		b = console.AppendEscaped(b, e.RequestID)
	}
	for i := len(b) - n; i < requestIDWidth; i++ {
		b = append(b, ' ')
	}
	b = append(b, "  "...)
	if e.Kind == event.KindHTTP {
		b = console.AppendEscaped(b, e.Method)
		b = append(b, ' ')
		b = console.AppendValue(b, e.Path)
	} else {
		b = console.AppendEscaped(b, e.Message)
		b = console.AppendAttrs(b, e)
	}
	if e.Error != "" {
		b = append(b, " error="...)
		b = console.AppendValue(b, e.Error)
	}
	return append(b, '\n')
}

func pad(b []byte, s string, width int) []byte {
	b = append(b, s...)
	return append(b, strings.Repeat(" ", max(0, width-len(s)))...)
}

// formatMillis renders a duration in milliseconds for the table: 0.4ms, 12.5ms, 1.25s.
func formatMillis(ms float64) string {
	switch {
	case ms >= 1000:
		return strconv.FormatFloat(ms/1000, 'f', 2, 64) + "s"
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	default:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	}
}

// appendDetails appends, indented below an event's row, what the table leaves out: the request and
// response (headers, query, bodies) and attributes as JSON, and the other fields that are set.
func appendDetails(b []byte, e *event.Event) []byte {
	for _, key := range []string{"request", "response", "attrs"} {
		if raw, ok := event.RawMember(e.Raw, key); ok {
			b = append(b, "    "...)
			b = append(b, key...)
			b = append(b, ": "...)
			b = console.AppendEscaped(b, string(raw))
			b = append(b, '\n')
		}
	}
	var more []byte
	for _, kv := range [...][2]string{{"message", e.Message}, {"route", e.Route}, {"trace_id", e.TraceID},
		{"span_id", e.SpanID}, {"service", e.Service}, {"client_ip", e.ClientIP}, {"user_agent", e.UserAgent},
		{"source", e.Source}, {"id", e.ID.String()}} {
		if kv[1] == "" || kv[0] == "message" && e.Kind == event.KindApp {
			continue
		}
		more = append(more, ' ')
		more = append(more, kv[0]...)
		more = append(more, '=')
		more = console.AppendValue(more, kv[1])
	}
	if e.BytesIn != 0 || e.BytesOut != 0 {
		more = fmt.Appendf(more, " bytes_in=%d bytes_out=%d", e.BytesIn, e.BytesOut)
	}
	b = append(b, "   "...)
	b = append(b, more...)
	return append(b, '\n')
}
