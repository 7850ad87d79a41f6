package pgsink

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The rows of a write go to PostgreSQL as one COPY in its binary format, encoded here from their typed
// values: what pgx's CopyFrom sends for the same rows (TestCopyBinaryMatchesPgx), without its
// per-value lookup of an encoding plan and the boxing of every value.

// copyHeader starts a binary COPY: the signature, no flags, no header extension.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// copyTrailer ends it: a field count of -1.
var copyTrailer = []byte{0xff, 0xff}

// y2kMicros is 2000-01-01 UTC, PostgreSQL's epoch for timestamptz, in microseconds since 1970.
const y2kMicros = 946684800 * 1000000

// appendCopy appends r as one tuple of a binary COPY.
func (r *row) appendCopy(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(columnNames)))
	b = binary.BigEndian.AppendUint32(b, 16)
	b = append(b, r.id[:]...)
	b = binary.BigEndian.AppendUint32(b, 8)
	b = binary.BigEndian.AppendUint64(b, uint64(r.ts.Unix()*1000000+int64(r.ts.Nanosecond())/1000-y2kMicros))
	b = appendText(b, r.level, false)
	b = appendText(b, r.kind, false)
	b = appendText(b, r.message, false)
	for _, s := range [...]string{r.service, r.requestID, r.traceID, r.spanID, r.method, r.route, r.path} {
		b = appendText(b, s, true)
	}
	if r.status == 0 {
		b = appendNull(b)
	} else {
		b = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, 4), uint32(r.status))
	}
	if r.durationMS == 0 {
		b = appendNull(b)
	} else {
		b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, 8), math.Float64bits(r.durationMS))
	}
	b = appendText(b, r.clientIP, true)
	b = appendText(b, r.userAgent, true)
	for _, n := range [...]int64{r.bytesIn, r.bytesOut} {
		if n == 0 {
			b = appendNull(b)
		} else {
			b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, 8), uint64(n))
		}
	}
	b = appendText(b, r.errText, true)
	b = appendText(b, r.source, true)
	for _, doc := range [...][]byte{r.request, r.response, r.attrs} {
		if doc == nil {
			b = appendNull(b)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(doc)+1))
		b = append(append(b, 1), doc...) // jsonb's binary form: version 1, then the text
	}
	return b
}

// appendText appends a text value, or NULL for an empty optional one.
func appendText(b []byte, s string, optional bool) []byte {
	if optional && s == "" {
		return appendNull(b)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendNull(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0xff) }

// columnTypes are the types of the columns the COPY writes, as format_type names them: its binary
// tuples hold exactly these (a column of another type, even a compatible one such as smallint, would
// refuse them or, for text instead of jsonb, store jsonb's version byte). The others are text.
var columnTypes = map[string]string{"id": "uuid", "ts": "timestamp with time zone", "status": "integer",
	"duration_ms": "double precision", "bytes_in": "bigint", "bytes_out": "bigint",
	"request": "jsonb", "response": "jsonb", "attrs": "jsonb"}

// checkTypes reports a column of table that the COPY does not write as its type, naming it: a table
// of the sink's own migrations always passes; one made by hand (Config.Table) may not.
func checkTypes(ctx context.Context, pool *pgxpool.Pool, table pgx.Identifier) error {
	rows, err := pool.Query(ctx, `SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, table.Sanitize())
	if err != nil {
		return fmt.Errorf("the column types of %s: %w", table.Sanitize(), err)
	}
	have, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var c [2]string
		err := r.Scan(&c[0], &c[1])
		return c, err
	})
	if err != nil {
		return fmt.Errorf("the column types of %s: %w", table.Sanitize(), err)
	}
	types := make(map[string]string, len(have))
	for _, c := range have {
		types[c[0]] = c[1]
	}
	var errs []error
	for _, c := range columnNames {
		want := columnTypes[c]
		if want == "" {
			want = "text"
		}
		switch got, ok := types[c]; {
		case !ok:
			errs = append(errs, fmt.Errorf("%s has no column %s (%s)", table.Sanitize(), c, want))
		case got != want && !(want == "text" && strings.HasPrefix(got, "character varying")):
			errs = append(errs, fmt.Errorf("column %s of %s is %s: the sink writes %s", c, table.Sanitize(), got, want))
		}
	}
	return errors.Join(errs...)
}

// copyColumns is the COPY statement's column list: columnNames, quoted.
var copyColumns = func() string {
	quoted := make([]string, len(columnNames))
	for i, c := range columnNames {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(quoted, ", ")
}()

// copyBuffers are the buffers of finished COPYs (*[]byte), for the next: a write's COPY is about as
// large as its batch's JSON (half a MiB for a chunk of a web node's), which otherwise is allocated,
// zeroed and collected again at every write.
var copyBuffers sync.Pool

// maxCopyBuffer is the largest buffer kept for another COPY.
const maxCopyBuffer = 16 << 20

// copyRows COPYs rows into table in tx, in one binary COPY.
func copyRows(ctx context.Context, tx pgx.Tx, table pgx.Identifier, rows []row) error {
	size := len(copyHeader) + len(copyTrailer)
	for i := range rows {
		r := &rows[i]
		size += 300 + len(r.message) + len(r.path) + len(r.userAgent) + len(r.errText) + len(r.request) + len(r.response) + len(r.attrs)
	}
	buf, _ := copyBuffers.Get().(*[]byte)
	if buf == nil || cap(*buf) < size {
		b := make([]byte, 0, size)
		buf = &b
	}
	b := append((*buf)[:0], copyHeader...)
	for i := range rows {
		b = rows[i].appendCopy(b)
	}
	b = append(b, copyTrailer...)
	sql := "COPY " + table.Sanitize() + " (" + copyColumns + ") FROM STDIN BINARY"
	_, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(b), sql)
	// Only a COPY that succeeded has surely stopped reading b: on some errors pgconn returns while
	// its sending goroutine may still read.
	if err == nil && cap(b) <= maxCopyBuffer {
		*buf = b[:0]
		copyBuffers.Put(buf)
	}
	return err
}
