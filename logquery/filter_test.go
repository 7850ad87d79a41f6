package logquery

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/event"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"15m", now.Add(-15 * time.Minute)},
		{"2h", now.Add(-2 * time.Hour)},
		{"1h30m", now.Add(-90 * time.Minute)},
		{"3d", now.Add(-72 * time.Hour)},
		{"1.5d", now.Add(-36 * time.Hour)},
		{"1w", now.Add(-7 * 24 * time.Hour)},
		{"2026-12-01T08:30:00Z", time.Date(2026, 12, 1, 8, 30, 0, 0, time.UTC)},
		{"2026-12-01T08:30:00.25+02:00", time.Date(2026, 12, 1, 6, 30, 0, 250e6, time.UTC)},
		{"2026-12-01T08:30", time.Date(2026, 12, 1, 8, 30, 0, 0, time.UTC)},
		{"2026-12-01 08:30:05", time.Date(2026, 12, 1, 8, 30, 5, 0, time.UTC)},
		{"2026-12-01", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
	} {
		got, err := ParseTime(c.in, now)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-5m", "0s", "5x", "2026-13-01", "d"} {
		if _, err := ParseTime(bad, now); err == nil {
			t.Errorf("ParseTime(%q): no error", bad)
		}
	}
}

func TestParseLevels(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []event.Level
	}{
		{"warn", []event.Level{event.LevelWarn, event.LevelError}},
		{"WARNING", []event.Level{event.LevelWarn, event.LevelError}},
		{"debug", event.Levels},
		{"error", []event.Level{event.LevelError}},
		{"=warn", []event.Level{event.LevelWarn}},
		{"info,error", []event.Level{event.LevelInfo, event.LevelError}},
		{"info, INFO ,debug", []event.Level{event.LevelInfo, event.LevelDebug}},
	} {
		got, err := ParseLevels(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseLevels(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "loud", "=", "info,,error", "=info,error"} {
		if _, err := ParseLevels(bad); err == nil {
			t.Errorf("ParseLevels(%q): no error", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []StatusRange
	}{
		{"500", []StatusRange{{500, 500}}},
		{"5xx", []StatusRange{{500, 599}}},
		{"5XX", []StatusRange{{500, 599}}},
		{"400-499", []StatusRange{{400, 499}}},
		{"404, 5xx", []StatusRange{{404, 404}, {500, 599}}},
	} {
		got, err := ParseStatus(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseStatus(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "50", "5000", "099", "0xx", "xx", "5x", "499-400", "abc", "500,", "4xx-5xx"} {
		if _, err := ParseStatus(bad); err == nil {
			t.Errorf("ParseStatus(%q): no error", bad)
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		f    Filter
		want string
	}{
		{Filter{Since: at, Until: at}, "since (2026-12-02T10:00:00Z) must be before until"},
		{Filter{Levels: []event.Level{"LOUD"}}, `levels: unknown level "LOUD"`},
		{Filter{Status: []StatusRange{{600, 500}}}, "status: 600-500"},
		{Filter{Limit: -1}, "limit (-1)"},
		{Filter{Path: `/a\`}, `path: a glob must not end in a lone \`},
	} {
		err := c.f.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: Validate() = %v, want %q", c.f, err, c.want)
		}
	}
	if err := (Filter{}).Validate(); err != nil {
		t.Errorf("the zero Filter: %v", err)
	}
}

// The path glob means the same in SQL (its LIKE pattern) and in memory.
func TestGlob(t *testing.T) {
	for _, c := range []struct {
		glob, like string
		match      []string
		noMatch    []string
	}{
		{"/api/*", "/api/%", []string{"/api/", "/api/v1/orders/7"}, []string{"/api", "/apix", "/other/api/x"}},
		{"*/orders/*", "%/orders/%", []string{"/api/v1/orders/7", "/orders/"}, []string{"/orders", "/api/order/1"}},
		{"/users/?", "/users/_", []string{"/users/1", "/users/é"}, []string{"/users/", "/users/12"}},
		{"/100%_done", `/100\%\_done`, []string{"/100%_done"}, []string{"/100xydone", "/100%_done/"}},
		{`/lit\*`, "/lit*", []string{"/lit*"}, []string{"/literal"}},
		{`/back\\slash`, `/back\\slash`, []string{`/back\slash`}, []string{"/backslash"}},
		{"**", "%", []string{"", "/anything"}, nil},
	} {
		g, err := compileGlob(c.glob)
		if err != nil {
			t.Fatalf("%q: %v", c.glob, err)
		}
		if got := g.like(); got != c.like {
			t.Errorf("%q: LIKE %q, want %q", c.glob, got, c.like)
		}
		for _, s := range c.match {
			if !g.match(s) {
				t.Errorf("%q does not match %q", c.glob, s)
			}
		}
		for _, s := range c.noMatch {
			if g.match(s) {
				t.Errorf("%q matches %q", c.glob, s)
			}
		}
	}
}

// Every condition becomes one bind parameter: nothing of the filter's values is in the SQL text.
func TestQuerySQL(t *testing.T) {
	p := &Postgres{cfg: PostgresConfig{Table: "application_logs"}}
	since := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	until := since.Add(24 * time.Hour)
	q, err := p.query(Filter{
		Since: since, Until: until, RequestID: "r'1", TraceID: "t1",
		Levels: []event.Level{event.LevelWarn, event.LevelError}, Status: []StatusRange{{404, 404}, {500, 599}},
		Route: "/users/:id", Path: "/users/*", Grep: "time'out", Limit: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	wantSQL := "SELECT " + columns + " FROM application_logs WHERE ts >= $1 AND ts < $2 AND request_id = $3 AND " +
		"trace_id = $4 AND level = ANY($5::text[]) AND (status = $6 OR status BETWEEN $7 AND $8) AND route = $9 AND " +
		`path LIKE $10 ESCAPE '\' AND (strpos(message, $11) > 0 OR strpos(error, $11) > 0) ` +
		"ORDER BY ts DESC, id DESC LIMIT $12"
	if q.sql != wantSQL {
		t.Errorf("SQL\n got %s\nwant %s", q.sql, wantSQL)
	}
	wantArgs := []any{since, until, "r'1", "t1", []string{"WARN", "ERROR"}, 404, 500, 599, "/users/:id", "/users/%", "time'out", 51}
	if !reflect.DeepEqual(q.args, wantArgs) {
		t.Errorf("args %#v, want %#v", q.args, wantArgs)
	}

	q, err = p.query(Filter{})
	if err != nil || q.sql != "SELECT "+columns+" FROM application_logs ORDER BY ts, id" || len(q.args) != 0 {
		t.Errorf("no filter, no limit: %q %v %v", q.sql, q.args, err)
	}

	// A poll of Follow: rows inserted from `from` on, their events no older than the floor (or Since).
	from, floor := since.Add(time.Hour), since.Add(-time.Hour)
	for _, c := range []struct {
		f         Filter
		wantSince time.Time
	}{{Filter{Grep: "x"}, floor}, {Filter{Grep: "x", Since: since}, since}} {
		q, err = p.followQuery(c.f, from, floor)
		want := "SELECT " + columns + " FROM application_logs WHERE inserted_at >= $1 AND ts >= $2 AND " +
			"(strpos(message, $3) > 0 OR strpos(error, $3) > 0) ORDER BY ts, id"
		if err != nil || q.sql != want || !reflect.DeepEqual(q.args, []any{from, c.wantSince, "x"}) {
			t.Errorf("follow poll of %+v: %q %v %v", c.f, q.sql, q.args, err)
		}
	}
}
