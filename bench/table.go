package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// WriteTable writes the results as Markdown tables: readable on a terminal, and pasted as they are into
// docs/BENCHMARKS.md.
func (r *Results) WriteTable(w io.Writer) {
	t := &tables{w: w}
	if pg := r.Postgres; pg != nil {
		t.title("PostgreSQL sink: events/s into application_logs (mean event %s B of JSON)", count(pg.EventJSONBytes))
		t.header("design", "events", "seconds", "events/s", "DB writes/s", "stored B/event", "Go CPU µs/event", "PostgreSQL CPU µs/event", "sluice is")
		s := pg.Sluice.EventsPerSecond
		for _, d := range []struct {
			name string
			t    PGThroughput
		}{
			{"sluice: chunks on the bus, batch subscriber, COPY (a stage + ON CONFLICT only on a replay)", pg.Sluice},
			{"raw pgx CopyFrom, 1,000 rows per COPY (ceiling)", pg.RawCopyFrom},
			{"one goroutine + one INSERT per event, 4 connections (the design replaced)", pg.PerEventInsert},
			{"the same through 1 connection", pg.PerEventInsertOneConn},
			{"Watermill GoChannel + SQL publisher per message", pg.WatermillSQL},
		} {
			t.row(d.name, count(float64(d.t.Events)), fixed(d.t.Seconds, 2), count(d.t.EventsPerSecond),
				count(d.t.DBWritesPerSecond), count(d.t.StoredBytesPerEvent), perEvent(d.t.ClientCPUSeconds, d.t.Events),
				perEvent(d.t.PostgresCPUSeconds, d.t.Events), times(d.name, s, d.t.EventsPerSecond))
		}
	}
	if b := r.Blob; b != nil {
		t.title("Blob sink: events/s into Azurite")
		t.header("design", "events", "seconds", "events/s", "blobs per 1,000 events", "stored B/event", "Go CPU µs/event", "sluice is")
		s := b.Sluice.EventsPerSecond
		for _, d := range []struct {
			name string
			t    BlobThroughput
		}{
			{"sluice: chunks on the bus, batch subscriber, gzip NDJSON per batch", b.Sluice},
			{"one JSON blob per event, 8 uploads at a time (the design replaced)", b.PerEventBlob},
			{"one gzip NDJSON upload of every event (ceiling)", b.OneUpload},
		} {
			t.row(d.name, count(float64(d.t.Events)), fixed(d.t.Seconds, 2), count(d.t.EventsPerSecond),
				fixed(d.t.BlobsPer1000Events, 2), count(d.t.StoredBytesPerEvent), perEvent(d.t.ClientCPUSeconds, d.t.Events),
				times(d.name, s, d.t.EventsPerSecond))
		}
	}
	if h := r.HTTP; h != nil {
		t.title("HTTP end to end: the demo at fixed rates (%s)", h.Targets)
		t.header("logging", "rate/s", "answered/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "server CPU s")
		for _, m := range h.ranModes() {
			for _, s := range m.mode.Steps {
				t.row(m.name, count(float64(s.Rate)), count(s.AchievedRPS), fixed(s.Latency.P50, 2),
					fixed(s.Latency.P99, 2), fixed(s.Latency.P999, 2), fixed(s.Latency.Max, 1),
					count(float64(s.Errors)), fixed(s.ServerCPUSeconds, 2))
			}
		}
		t.title("HTTP: highest sustained rate (%s) and the server's resources over the fixed rates", h.SustainedRule)
		t.header("logging", "highest sustained rate/s", "rates tried in the search", "server CPU s", "CPU µs/request",
			"CPU/request vs off", "peak RSS MiB")
		offCPU := h.Off.cpuPerRequest()
		for _, m := range h.ranModes() {
			cpu := m.mode.cpuPerRequest()
			vsOff := "n/a"
			if offCPU > 0 {
				vsOff = fixed(cpu/offCPU, 2) + "x"
			}
			var tried []string
			for _, s := range m.mode.Search {
				mark := "✗"
				if s.Sustained {
					mark = "✓"
				}
				tried = append(tried, strconv.Itoa(s.Rate)+mark)
			}
			t.row(m.name, count(float64(m.mode.MaxSustainedRPS)), strings.Join(tried, " "), fixed(m.mode.CPUSeconds, 1),
				count(cpu), vsOff, mib(m.mode.PeakRSSBytes))
		}
	}
	if o := r.Overload; o != nil {
		t.title("Overload: the demo with sluice at %d requests/s, %.0f s with PostgreSQL and Azurite down", o.Rate, o.Overload.Seconds)
		t.header("storage", "seconds", "answered/s", "p50 ms", "p99 ms", "p99.9 ms", "errors")
		for _, s := range []struct {
			name string
			s    LoadStep
		}{{"up (baseline)", o.Baseline}, {"down", o.Overload}} {
			t.row(s.name, fixed(s.s.Seconds, 0), count(s.s.AchievedRPS), fixed(s.s.Latency.P50, 2), fixed(s.s.Latency.P99, 2),
				fixed(s.s.Latency.P999, 2), count(float64(s.s.Errors)))
		}
		besides := "—" // not measured by the run that wrote the results
		if g := o.MaxGoroutinesBesidesConnections; g != nil {
			besides = count(float64(*g))
		}
		t.header("peak RSS MiB", "highest RSS sampled MiB", "most goroutines sampled",
			"most goroutines besides HTTP connections", "events published", "events dropped")
		t.row(mib(o.PeakRSSBytes), mib(o.MaxRSSBytes), count(float64(o.MaxGoroutines)), besides, count(o.EventsPublished),
			count(o.EventsDropped)+dropReasons(o.DroppedByReason))
	}
	if b := r.Bus; b != nil {
		b.writeTable(t)
	}
	if len(r.Ratios) > 0 {
		runs := "one run"
		if r.Bus != nil && r.Bus.Runs > 1 {
			runs = fmt.Sprintf("one run; the bus's, the median of %d", r.Bus.Runs)
		}
		t.title("Ratios against the goals (%s, this machine)", runs)
		t.header("ratio", "value", "goal", "")
		for _, q := range r.Ratios {
			goal, met := "—", ""
			if q.Goal != ratioNoGoal {
				op := "≥"
				if q.Better == betterLow {
					op = "≤"
				}
				goal = op + " " + strconv.FormatFloat(q.Goal, 'f', -1, 64) + " " + q.Unit
				met = "met"
				if !q.Met {
					met = "**missed**"
				}
			}
			name := q.Name
			if q.Note != "" {
				name += " (" + q.Note + ")"
			}
			t.row(name, fixed(q.Value, 2)+" "+q.Unit, goal, met)
		}
	}
	for _, s := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(w, "\n**%s failed**: %s\n", s, r.Errors[s])
	}
}

// writeTable writes the bus scenario's tables: the throughput of each design, then where sluice's time
// went.
func (b *BusResults) writeTable(t *tables) {
	runs := ""
	if b.Runs > 1 {
		runs = fmt.Sprintf("; each bus's median of %d runs", b.Runs)
	}
	t.title("Bus: events/s from a web node's Publish to rows committed in PostgreSQL (mean event %s B of JSON; %d publishing goroutines, %d workers%s)",
		count(b.EventJSONBytes), b.Publishers, b.Workers, runs)
	t.header("bus", "design", "events", "seconds", "events/s", "broker messages", "DB writes", "Go CPU µs/event",
		"PostgreSQL CPU µs/event", "broker CPU µs/event", "sluice is")
	row := func(bus, design string, d BusThroughput, vs string) {
		t.row(bus, design, count(float64(d.Events)), fixed(d.Seconds, 2), count(d.EventsPerSecond), count(float64(d.BrokerMessages)),
			count(float64(d.DBWrites)), perEvent(d.ClientCPUSeconds, d.Events), perEvent(d.PostgresCPUSeconds, d.Events),
			perEvent(d.BrokerCPUSeconds, d.Events), vs)
	}
	if p := b.InProcess; p != nil {
		vs := "—"
		if len(b.InProcessRuns) > 1 {
			rates := make([]string, len(b.InProcessRuns))
			for i, r := range b.InProcessRuns {
				rates[i] = count(r.EventsPerSecond)
			}
			vs = fmt.Sprintf("(median of %d runs: %s events/s)", len(rates), strings.Join(rates, ", "))
		}
		row("in-process", "sluice: one pipeline, memory bus, COPY", *p, vs)
	}
	names := slices.Sorted(maps.Keys(b.Brokers))
	for _, name := range names {
		br := b.Brokers[name]
		row(name, fmt.Sprintf("sluice: web node, a message per chunk, %d workers, COPY per chunk", b.Workers), br.Sluice, "—")
		vs := times("stock", br.Sluice.EventsPerSecond, br.Stock.EventsPerSecond)
		if len(br.Runs) > 1 {
			vs += " (median of " + br.runRatios() + ")"
		}
		row(name, fmt.Sprintf("stock Watermill: its adapter, a message per event, %d subscriptions, an INSERT per message", b.Workers), br.Stock, vs)
	}
	t.title("Bus: where sluice's time went (seconds summed over whoever did it at once; broker messages are chunks)")
	t.header("bus", "seconds", "publishers waiting on a full local bus s", "publishes to the broker s",
		"ms per publish", "PostgreSQL writes s", "ms per write", "events per write", "Go CPU s", "PostgreSQL CPU s", "broker CPU s")
	where := func(bus string, d BusThroughput) {
		t.row(bus, fixed(d.Seconds, 2), fixed(d.PublishWaitSeconds, 2), fixed(d.ForwardSeconds, 2),
			fixed(div(d.ForwardSeconds*1e3, float64(d.BrokerMessages)), 1), fixed(d.SinkWriteSeconds, 2),
			fixed(div(d.SinkWriteSeconds*1e3, float64(d.DBWrites)), 1), count(div(float64(d.Events), float64(d.DBWrites))),
			fixed(d.ClientCPUSeconds, 2), fixed(d.PostgresCPUSeconds, 2), fixed(d.BrokerCPUSeconds, 2))
	}
	if p := b.InProcess; p != nil {
		where("in-process", *p)
	}
	for _, name := range names {
		where(name, b.Brokers[name].Sluice)
	}
	for _, name := range names {
		if e := b.Brokers[name].Error; e != "" {
			fmt.Fprintf(t.w, "\n**bus %s failed**: %s\n", name, e)
		}
	}
}

// namedMode is a request logging mode's figures, with its name in the tables and the plot, and its key
// in the JSON (under "http").
type namedMode struct {
	key  string
	name string
	mode HTTPMode
}

// modes lists every request logging mode of the HTTP scenario, in the order of the tables.
func (h *HTTPResults) modes() []namedMode {
	return []namedMode{
		{"off", "off", h.Off},
		{"echo", "Echo request logger", h.Echo},
		{"echo_file", "Echo request logger to a file", h.EchoFile},
		{"sluice", "sluice", h.Sluice},
	}
}

// ranModes is modes without those that have no steps: that did not run (results of a run before the mode
// existed, or of a run that failed).
func (h *HTTPResults) ranModes() []namedMode {
	var ran []namedMode
	for _, m := range h.modes() {
		if len(m.mode.Steps) > 0 {
			ran = append(ran, m)
		}
	}
	return ran
}

// cpuPerRequest is the server's CPU time over the fixed-rate steps per request sent, in µs.
func (m HTTPMode) cpuPerRequest() float64 {
	var requests int
	for _, s := range m.Steps {
		requests += s.Requests
	}
	return div(m.CPUSeconds*1e6, float64(requests))
}

// tables writes Markdown tables.
type tables struct{ w io.Writer }

func (t *tables) title(format string, args ...any) {
	fmt.Fprintf(t.w, "\n**%s**\n", fmt.Sprintf(format, args...))
}

func (t *tables) header(cols ...string) {
	fmt.Fprintln(t.w)
	t.row(cols...)
	seps := make([]string, len(cols))
	for i := range seps {
		seps[i] = "---:"
	}
	seps[0] = "---"
	t.row(seps...)
}

func (t *tables) row(cells ...string) {
	fmt.Fprintf(t.w, "| %s |\n", strings.Join(cells, " | "))
}

// count formats a number rounded to an integer with thousands separators: 12,345.
func count(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// perEvent is CPU seconds per event in microseconds.
func perEvent(seconds float64, events int) string { return fixed(div(seconds*1e6, float64(events)), 1) }

func fixed(v float64, decimals int) string { return strconv.FormatFloat(v, 'f', decimals, 64) }

func mib(b int64) string { return fixed(float64(b)/(1<<20), 1) }

// times is how many times as fast sluice is as the design named ("—" for sluice itself).
func times(design string, sluice, other float64) string {
	if strings.HasPrefix(design, "sluice") {
		return "—"
	}
	if other == 0 {
		return "n/a"
	}
	return fixed(sluice/other, 2) + "x"
}

func dropReasons(by map[string]float64) string {
	var parts []string
	for _, reason := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, reason+" "+count(by[reason]))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
