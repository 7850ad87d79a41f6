package sluice

import "github.com/sluicelog/sluice/event"

// fitEvent shrinks an event whose encoding is over limit bytes, in the order that loses the least:
// the bodies' content (the body keeps its size and type, and says omitted: event_size), then the
// headers (counted in headers_dropped), then the attributes (counted in sluice_attrs_dropped). It
// returns the new encoding, appended to buf[:0], or ok=false when even that is over the limit.
func fitEvent(e *event.Event, buf []byte, limit int) (line []byte, ok bool) {
	steps := []func() bool{
		func() bool {
			changed := false
			for _, m := range []*event.Message{e.Request, e.Response} {
				if m != nil && m.Body != nil && (len(m.Body.JSON) > 0 || m.Body.Text != "" || m.Body.Base64 != "") {
					m.Body.JSON, m.Body.Text, m.Body.Base64 = nil, "", ""
					m.Body.Truncated, m.Body.Omitted = true, "event_size"
					changed = true
				}
			}
			return changed
		},
		func() bool {
			changed := false
			for _, m := range []*event.Message{e.Request, e.Response} {
				if m != nil && len(m.Headers) > 0 {
					for _, vs := range m.Headers {
						m.HeadersDropped += len(vs)
					}
					m.Headers = nil
					changed = true
				}
			}
			return changed
		},
		func() bool {
			if len(e.Attrs) == 0 {
				return false
			}
			e.Attrs = map[string]any{"sluice_attrs_dropped": len(e.Attrs)}
			return true
		},
	}
	for _, step := range steps {
		if !step() {
			continue
		}
		out, err := e.AppendJSON(buf[:0])
		if err != nil {
			return nil, false
		}
		if buf = out; len(out) <= limit {
			return out, true
		}
	}
	return nil, false
}
