package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/event"
)

// sluice logs refuses bad usage with exit 2, naming the flag, before it connects to anything.
func TestLogsUsage(t *testing.T) {
	environ = func() []string { return nil }
	t.Cleanup(func() { environ = os.Environ })
	for _, c := range []struct {
		args []string
		code int
		out  string // a substring of stdout (code 0) or stderr
	}{
		{[]string{"logs", "-h"}, 0, "-request-id"},
		{[]string{"help", "logs"}, 0, "same as --follow"},
		{[]string{"logs", "--status", "5x"}, 2, `invalid value "5x" for flag -status: "5x" is not a status`},
		{[]string{"logs", "--level", "loud"}, 2, `invalid value "loud" for flag -level`},
		{[]string{"logs", "--limit", "-1"}, 2, "invalid value \"-1\" for flag -limit"},
		{[]string{"logs", "--since", "yesterday"}, 2, `--since: "yesterday" is neither a duration`},
		{[]string{"logs", "--since", "1h", "--until", "2h"}, 2, "must be before until"},
		{[]string{"logs", "-f", "--archive"}, 2, "--follow reads PostgreSQL only"},
		{[]string{"logs", "--follow", "--until", "1h"}, 2, "takes no --until"},
		{[]string{"logs", "--prefix", "audit"}, 2, "add --archive"},
		{[]string{"logs", "--path", `/a\`}, 2, "path: a glob must not end in a lone"},
		{[]string{"logs", "stray"}, 2, `unexpected arguments ["stray"]`},
	} {
		var out, errs bytes.Buffer
		code := run(c.args, &out, &errs)
		got := errs.String()
		if c.code == 0 {
			got = out.String()
		}
		if code != c.code || !strings.Contains(got, c.out) {
			t.Errorf("sluice %s: exit %d, want %d\nstdout: %s\nstderr: %s\nwant %q", strings.Join(c.args, " "),
				code, c.code, out.String(), errs.String(), c.out)
		}
	}
}

// The table: one line per event with its columns aligned, nothing a terminal would act on, colour
// only when asked; --wide adds the details below.
func TestLogsTable(t *testing.T) {
	at := time.Date(2026, 12, 2, 7, 56, 27, 260e6, time.UTC)
	h := event.New(event.LevelError, event.KindHTTP, "GET /fail 500")
	h.TS, h.Method, h.Path, h.Status, h.DurationMS, h.RequestID, h.Error = at, "GET", "/fail\x1b[2J", 500, 0.497, "req-1", "boom\nagain"
	h.Request = &event.Message{Query: "a=1"}
	a := event.New(event.LevelInfo, event.KindApp, "order shown")
	a.TS, a.RequestID, a.Attrs = at.Add(time.Millisecond), "req-1", map[string]any{"order": 7}
	var out bytes.Buffer
	p := newLogsPrinter(&out, false, false, false)
	for _, e := range []*event.Event{h, a} {
		e.Raw, _ = e.AppendJSON(nil)
		if err := p.print(e); err != nil {
			t.Fatal(err)
		}
	}
	want := tableHeader +
		`2026-12-02 07:56:27.260  ERROR  500        0.5ms  req-1                                 GET "/fail\x1b[2J" error="boom\nagain"` + "\n" +
		`2026-12-02 07:56:27.261  INFO   app               req-1                                 order shown order=7` + "\n"
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	p = newLogsPrinter(&out, false, true, true)
	_ = p.print(h)
	if s := out.String(); !strings.Contains(s, "\x1b[31mERROR\x1b[0m") || !strings.Contains(s, "\n    request: {\"query\":\"a=1\"}\n") ||
		!strings.Contains(s, "message=\"GET /fail 500\"") || strings.Contains(s, "\x1b[2J") {
		t.Errorf("wide, coloured:\n%q", s)
	}

	out.Reset()
	p = newLogsPrinter(&out, true, false, false)
	_ = p.print(h)
	if out.String() != string(h.Raw)+"\n" {
		t.Errorf("--json: %q", out.String())
	}
	if colorOn(&out) {
		t.Error("colour on a buffer")
	}
}
