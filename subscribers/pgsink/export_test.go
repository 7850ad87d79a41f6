package pgsink

// For the benchmarks: the rows the sink writes, so that the baselines write the very same values.
var (
	EventRows   = eventRows
	ColumnNames = columnNames
)
