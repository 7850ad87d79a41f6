package logquery

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicelog/sluice/event"
)

// Filter selects events. Its zero value selects every event. Conditions combine with AND; the values
// of one condition (levels, status ranges) with OR.
type Filter struct {
	// Since and Until bound the event time: Since <= ts < Until. Zero means unbounded (but the archive
	// needs Since: ErrNoRange).
	Since, Until time.Time
	// Levels are the levels to show; empty: all. ParseLevels turns "warn" into WARN and ERROR.
	Levels []event.Level
	// Status are the HTTP statuses to show, each a range; empty: any status, and events without one.
	// ParseStatus reads "500", "5xx", "400-499" and lists of them.
	Status []StatusRange
	// Path is a glob over the request path: * matches any run of characters (slashes included), ?
	// one character, \ escapes the next; anything else matches itself. Empty: any path.
	Path string
	// Route is the route template (/users/:id), exactly.
	Route string
	// RequestID and TraceID select one request or trace, exactly.
	RequestID, TraceID string
	// Grep is a substring of the message or the error, case-sensitive.
	Grep string
	// Limit is how many of the newest matching events to hand over; 0: all of them.
	Limit int
}

// StatusRange is an inclusive range of HTTP statuses: 500-500, 500-599.
type StatusRange struct{ Min, Max int }

// Validate reports what makes the filter unusable, naming the field.
func (f Filter) Validate() error {
	var errs []error
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		errs = append(errs, fmt.Errorf("since (%s) must be before until (%s)",
			f.Since.UTC().Format(time.RFC3339), f.Until.UTC().Format(time.RFC3339)))
	}
	for _, l := range f.Levels {
		if _, err := event.ParseLevel(string(l)); err != nil || string(l) != strings.ToUpper(string(l)) {
			errs = append(errs, fmt.Errorf("levels: unknown level %q (want DEBUG, INFO, WARN or ERROR)", l))
		}
	}
	for _, r := range f.Status {
		if r.Min < 100 || r.Max > 999 || r.Min > r.Max {
			errs = append(errs, fmt.Errorf("status: %d-%d is not a range of HTTP statuses (100 to 999, low first)", r.Min, r.Max))
		}
	}
	if f.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit (%d) must not be negative (0: no limit)", f.Limit))
	}
	if _, err := compileGlob(f.Path); err != nil {
		errs = append(errs, fmt.Errorf("path: %w", err))
	}
	return errors.Join(errs...)
}

// ParseTime reads a bound of the time range: a duration before now ("90s", "15m", "2h", "3d", "1w"),
// an RFC 3339 time ("2026-12-02T07:30:00Z", a fraction and an offset allowed), a time without an
// offset, taken as UTC ("2026-12-02T07:30", "2026-12-02 07:30:00"), or a day ("2026-12-02", its
// start in UTC).
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty time (want a duration such as 15m, 2h or 3d, or a time such as 2026-12-02T07:30:00Z)")
	}
	if d, ok := parseAgo(s); ok {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999",
		"2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (15m, 2h, 3d, 1w) nor a time "+
		"(2026-12-02T07:30:00Z, 2026-12-02 07:30, 2026-12-02; UTC unless it has an offset)", s)
}

// parseAgo reads a positive duration, with d (24h) and w (7d) besides Go's units.
func parseAgo(s string) (time.Duration, bool) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || v <= 0 || v > 1e5 {
				return 0, false
			}
			return time.Duration(v * float64(unit)), true
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

// ParseLevels reads the levels to show: one level is that level and the ones above it ("warn": WARN
// and ERROR), "=warn" is that level only, and a comma-separated list is those levels exactly
// ("info,error"). Names are case-insensitive; WARNING is WARN.
func ParseLevels(s string) ([]event.Level, error) {
	s = strings.TrimSpace(s)
	if exact, ok := strings.CutPrefix(s, "="); ok {
		l, err := event.ParseLevel(strings.TrimSpace(exact))
		if err != nil {
			return nil, err
		}
		return []event.Level{l}, nil
	}
	if !strings.Contains(s, ",") {
		l, err := event.ParseLevel(s)
		if err != nil {
			return nil, err
		}
		return slices.Clone(event.Levels[slices.Index(event.Levels, l):]), nil
	}
	var levels []event.Level
	for part := range strings.SplitSeq(s, ",") {
		l, err := event.ParseLevel(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(levels, l) {
			levels = append(levels, l)
		}
	}
	return levels, nil
}

// ParseStatus reads HTTP statuses: a code ("500"), a class ("5xx"), a range ("400-499"), or a
// comma-separated list of them ("404,5xx").
func ParseStatus(s string) ([]StatusRange, error) {
	var ranges []StatusRange
	for part := range strings.SplitSeq(s, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		r, err := parseStatusRange(part)
		if err != nil {
			return nil, err
		}
		ranges = append(ranges, r)
	}
	return ranges, nil
}

func parseStatusRange(s string) (StatusRange, error) {
	bad := fmt.Errorf("%q is not a status (want a code such as 500, a class such as 5xx, or a range such as 400-499)", s)
	code := func(s string) (int, bool) {
		n, err := strconv.Atoi(s)
		return n, err == nil && len(s) == 3 && n >= 100
	}
	if class, ok := strings.CutSuffix(s, "xx"); ok && len(class) == 1 && class[0] >= '1' && class[0] <= '9' {
		c := int(class[0]-'0') * 100
		return StatusRange{c, c + 99}, nil
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, okA := code(strings.TrimSpace(lo))
		b, okB := code(strings.TrimSpace(hi))
		if !okA || !okB {
			return StatusRange{}, bad
		}
		if a > b {
			return StatusRange{}, fmt.Errorf("status range %q: %d is above %d", s, a, b)
		}
		return StatusRange{a, b}, nil
	}
	n, ok := code(s)
	if !ok {
		return StatusRange{}, bad
	}
	return StatusRange{n, n}, nil
}
