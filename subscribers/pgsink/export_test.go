package pgsink

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/event"
)

// For the benchmarks: the rows the sink writes, so that the baselines write the very same values.
var ColumnNames = columnNames

// EventRows is eventRows with each row as pgx takes it.
func EventRows(events []*event.Event) ([][]any, []error) {
	rows, bad := eventRows(events)
	values := make([][]any, len(rows))
	for i := range rows {
		values[i] = rows[i].values()
	}
	return values, bad
}

// EncodedRows is eventRows alone: the sink's own work per row before its COPY encoding.
func EncodedRows(events []*event.Event) []error {
	rows, bad := eventRows(events)
	b := make([]byte, 0, 1<<20)
	for i := range rows {
		b = rows[i].appendCopy(b[:0])
	}
	return bad
}

// CopyRows COPYs the events' rows into table as the sink does, in one binary COPY of its own making.
func CopyRows(ctx context.Context, pool *pgxpool.Pool, table string, events []*event.Event) error {
	rows, bad := eventRows(events)
	if len(bad) > 0 {
		return bad[0]
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return copyRows(ctx, tx, pgx.Identifier{table}, rows) })
}

// ApplyUpTo applies the migrations up to version that the database does not have, and no further: a
// database as an older release left it.
func ApplyUpTo(ctx context.Context, pool *pgxpool.Pool, version int) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, createVersionTable); err != nil {
		return err
	}
	have, err := appliedVersions(ctx, conn)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if _, ok := have[m.Version]; !ok && m.Version <= version {
			if err := apply(ctx, conn.Conn(), m); err != nil {
				return err
			}
		}
	}
	return nil
}

// ConvertToPartitions runs migration 0003 as if it were now, and says how long it locked the table.
func ConvertToPartitions(ctx context.Context, pool *pgxpool.Pool, now time.Time) (prepare, locked time.Duration, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Release()
	st, err := convertToPartitions(ctx, conn.Conn(), now)
	return st.Prepare, st.Locked, err
}
