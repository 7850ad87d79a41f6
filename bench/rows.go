package bench

import (
	"fmt"
	"strings"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// The raw designs of the PostgreSQL scenario (CopyFrom, per-event INSERT) write the very rows pgsink
// writes, built by pgsink.Row: the ceiling pays for the same row building as sluice, no more.

// rowColumns are the application_logs columns a row fills, in the order of row's values.
var rowColumns = pgsink.Columns()

// row is an event's row as pgsink writes it.
func row(e *event.Event) ([]any, error) { return pgsink.Row(e) }

// insertOne is one single-row INSERT of rowColumns.
var insertOne = func() string {
	params := make([]string, len(rowColumns))
	for i := range params {
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	return "INSERT INTO application_logs (" + strings.Join(rowColumns, ", ") + ") VALUES (" +
		strings.Join(params, ", ") + ")"
}()
