package logquery

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicelog/sluice/event"
)

// glob is a compiled Filter.Path: literal runs, and the wildcards * and ?.
type glob []globPart

type globPart struct {
	lit  string // when neither star nor one
	star bool   // *: any run of characters
	one  bool   // ?: one character
}

// compileGlob parses a path glob; "" is no glob.
func compileGlob(p string) (glob, error) {
	var (
		g   glob
		lit strings.Builder
	)
	flush := func() {
		if lit.Len() > 0 {
			g = append(g, globPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			flush()
			if len(g) == 0 || !g[len(g)-1].star {
				g = append(g, globPart{star: true})
			}
		case '?':
			flush()
			g = append(g, globPart{one: true})
		case '\\':
			if i == len(p)-1 {
				return nil, errors.New(`a glob must not end in a lone \ (write \\ for a backslash)`)
			}
			i++
			lit.WriteByte(p[i])
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return g, nil
}

// like returns the glob as a LIKE pattern whose escape character is \.
func (g glob) like() string {
	var b strings.Builder
	for _, p := range g {
		switch {
		case p.star:
			b.WriteByte('%')
		case p.one:
			b.WriteByte('_')
		default:
			for i := 0; i < len(p.lit); i++ {
				if c := p.lit[i]; c == '%' || c == '_' || c == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(p.lit[i])
			}
		}
	}
	return b.String()
}

// match reports whether s matches the whole glob, as LIKE does: ? is one character (a rune).
func (g glob) match(s string) bool {
	if len(g) == 0 {
		return s == ""
	}
	p := g[0]
	switch {
	case p.star:
		rest := g[1:]
		for i := 0; ; {
			if rest.match(s[i:]) {
				return true
			}
			if i == len(s) {
				return false
			}
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
		}
	case p.one:
		if s == "" {
			return false
		}
		_, n := utf8.DecodeRuneInString(s)
		return g[1:].match(s[n:])
	default:
		rest, ok := strings.CutPrefix(s, p.lit)
		return ok && g[1:].match(rest)
	}
}

// matcher is a Filter ready to test events in memory, with the same meaning as the SQL of Postgres.
type matcher struct {
	f    Filter
	path glob
	// needles are values the filter asks for that an event's JSON line must hold as they are.
	needles [][]byte
}

func newMatcher(f Filter) (*matcher, error) {
	g, err := compileGlob(f.Path)
	if err != nil {
		return nil, err
	}
	m := &matcher{f: f, path: g}
	for _, v := range [...]string{f.RequestID, f.TraceID, f.Route, f.Grep} {
		if v != "" && plainJSON(v) {
			m.needles = append(m.needles, []byte(v))
		}
	}
	return m, nil
}

// fields are the parts of an event that a filter looks at.
type fields struct {
	TS        time.Time `json:"ts"`
	Level     string    `json:"level"`
	Message   string    `json:"message"`
	RequestID string    `json:"request_id"`
	TraceID   string    `json:"trace_id"`
	Route     string    `json:"route"`
	Path      string    `json:"path"`
	Status    int       `json:"status"`
	Error     string    `json:"error"`
}

// match reports whether an event with these fields is selected. A condition on a field the event
// does not have (no status, no path: an application log) does not match, as NULL does not in SQL.
func (m *matcher) match(e *fields) bool {
	f := &m.f
	switch {
	case !f.Since.IsZero() && e.TS.Before(f.Since),
		!f.Until.IsZero() && !e.TS.Before(f.Until),
		f.RequestID != "" && e.RequestID != f.RequestID,
		f.TraceID != "" && e.TraceID != f.TraceID,
		f.Route != "" && e.Route != f.Route,
		len(f.Levels) > 0 && !slices.Contains(f.Levels, event.Level(e.Level)),
		f.Path != "" && (e.Path == "" || !m.path.match(e.Path)),
		f.Grep != "" && !strings.Contains(e.Message, f.Grep) && !strings.Contains(e.Error, f.Grep):
		return false
	}
	if len(f.Status) > 0 {
		return slices.ContainsFunc(f.Status, func(r StatusRange) bool { return e.Status >= r.Min && e.Status <= r.Max })
	}
	return true
}

// mayMatch is a quick look at an event's JSON line before it is decoded: false when a value the
// filter asks for exactly (request id, trace id, route) or the text it greps for cannot be in the line.
// It looks only for values that JSON writes as they are.
func (m *matcher) mayMatch(line []byte) bool {
	for _, n := range m.needles {
		if !bytes.Contains(line, n) {
			return false
		}
	}
	if len(m.f.Levels) > 0 {
		if v, ok := event.RawMember(line, "level"); ok && len(v) > 2 && v[0] == '"' && bytes.IndexByte(v, '\\') < 0 &&
			!slices.Contains(m.f.Levels, event.Level(v[1:len(v)-1])) {
			return false
		}
	}
	if len(m.f.Status) > 0 {
		v, ok := event.RawMember(line, "status")
		if !ok {
			return false // no status: an application log, or a request without one
		}
		if n, err := strconv.Atoi(string(v)); err == nil && !slices.ContainsFunc(m.f.Status, func(r StatusRange) bool {
			return n >= r.Min && n <= r.Max
		}) {
			return false
		}
	}
	return true
}

// plainJSON reports whether s is written in a JSON string as it is: printable ASCII without the
// characters an encoder escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
