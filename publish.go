package sluice

import (
	"context"
	"fmt"
	"sync"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/publishers"
)

// Publish hands one event, without blocking, to every route whose filter it matches: it encodes the
// event once and appends it to the route's open chunk (see Route.Chunk), which is published as one bus
// message when it is full or old enough. Each route has its own share of the bus, and its open chunks
// count toward that share: a route that has no room refuses the event at once, and it is counted as
// dropped for that route, by reason (a stuck sink fills only its own share). Publish returns a
// *DropError only when no route took the event; an event that no route wants is counted as unrouted
// and is not an error. Publish keeps e (and sets its Raw, then drops its Request, Response and Attrs,
// which stay in Raw: see event.Lean): the caller must not use it afterwards.
// An event whose Raw is already set (bytes received from elsewhere) is forwarded as those bytes, which
// the routes decode and validate.
func (p *Pipeline) Publish(_ context.Context, e *event.Event) error {
	if p.closing.Load() {
		p.metrics.drop(bus.ReasonClosed, "", 1)
		return &DropError{Why: bus.ReasonClosed, Err: ErrClosed}
	}
	if p.role == roleWorker {
		return &DropError{Why: publishers.ReasonPublishError, Err: ErrWorker}
	}
	foreign := len(e.Raw) > 0
	line := e.Raw
	matched, accepted := 0, 0
	var lastErr error
	lastReason := ""
	var scratch *[]byte
	for _, r := range p.routes {
		if !r.match(e) {
			continue
		}
		matched++
		if len(line) == 0 { // not nil alone: an empty Raw is no encoding either
			// Encoded once, into a buffer of this processor's; each route copies the line into
			// its chunk, and e.Raw becomes the first route's copy.
			scratch = encodeBuffers.Get().(*[]byte)
			raw, err := e.EncodeRaw((*scratch)[:0]) // the chunker makes its copy e.Raw (SetRaw)
			if err != nil {
				encodeBuffers.Put(scratch)
				p.metrics.drop(publishers.ReasonPublishError, "", 1)
				return &DropError{Why: publishers.ReasonPublishError, Err: err}
			}
			if len(raw) > p.cfg.Capture.MaxEventBytes {
				fitted, ok := fitEvent(e, raw, p.cfg.Capture.MaxEventBytes)
				if !ok {
					*scratch = raw[:0]
					encodeBuffers.Put(scratch)
					p.metrics.drop(bus.ReasonTooLarge, "", 1)
					return &DropError{Why: bus.ReasonTooLarge, Err: fmt.Errorf("event over capture.max_event_bytes (%d) even without its bodies, headers and attributes", p.cfg.Capture.MaxEventBytes)}
				}
				raw = fitted
			}
			*scratch, line = raw, raw
		}
		if err := r.chunks.add(e, line, foreign); err != nil {
			reason := dropReason(err)
			p.metrics.drop(reason, r.cfg.Name, 1)
			lastErr, lastReason = err, reason
			continue
		}
		accepted++
	}
	if scratch != nil && cap(*scratch) <= maxEncodeBuffer {
		encodeBuffers.Put(scratch)
	}
	switch {
	case matched == 0:
		p.metrics.unrouted.Inc()
		return nil
	case accepted == 0:
		return &DropError{Why: lastReason, Err: lastErr}
	}
	return nil
}

// encodeBuffers hold the encoding of an event while Publish copies it into the routes' chunks.
var encodeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxEncodeBuffer bounds the buffers that go back to encodeBuffers, so that one huge event does not
// pin its memory.
const maxEncodeBuffer = 64 << 10

// DropError says why an event was not accepted; publishers count it by Reason.
type DropError struct {
	Why string // the drop reason: a bus.Reason* or publishers.ReasonPublishError
	Err error
}

func (e *DropError) Error() string { return "sluice: event dropped (" + e.Why + "): " + e.Err.Error() }

// Unwrap returns the cause.
func (e *DropError) Unwrap() error { return e.Err }

// Reason names the drop reason (publishers.DropReason reads it).
func (e *DropError) Reason() string { return e.Why }

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
		out, err := e.EncodeRaw(buf[:0])
		if err != nil {
			return nil, false
		}
		if buf = out; len(out) <= limit {
			return out, true
		}
	}
	return nil, false
}
