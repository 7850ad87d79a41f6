package publishers

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/redact"
)

// requestBody stands in for a request's body: the handler reads the whole, unchanged stream through it
// while it keeps a copy of the first limit bytes and counts the rest. It never reads ahead of the
// handler; after the handler, topUp reads what the handler left, up to limit+1 bytes in all, for at
// most a timeout.
type requestBody struct {
	src            io.ReadCloser
	limit          int
	contentLength  int64 // -1 when unknown
	expectsGoAhead bool  // the client waits for "100 Continue" before it sends the body

	mu        sync.Mutex // guards the rest: topUp's reader may outlive its timeout
	buf       []byte
	total     int64 // bytes read through, captured or not
	eof       bool
	failed    bool // a read failed (other than EOF)
	timedOut  bool
	abandoned bool // topUp gave up; its reader must not touch buf any more
}

func newRequestBody(r *http.Request, limit int) *requestBody {
	contentLength := r.ContentLength
	b := &requestBody{src: r.Body, limit: limit, contentLength: contentLength,
		expectsGoAhead: strings.EqualFold(headerValue(r.Header, "Expect"), "100-continue")}
	if contentLength > 0 && limit > 0 {
		b.buf = make([]byte, 0, min(contentLength, int64(limit)))
	}
	return b
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.src.Read(p)
	b.mu.Lock()
	if !b.abandoned {
		if room := b.limit - len(b.buf); room > 0 && n > 0 {
			b.buf = append(b.buf, p[:min(n, room)]...)
		}
		b.total += int64(n)
		if err == io.EOF {
			b.eof = true
		} else if err != nil {
			b.failed = true
		}
	}
	b.mu.Unlock()
	return n, err
}

func (b *requestBody) Close() error { return b.src.Close() }

// topUp reads what the handler did not, until limit+1 bytes have been seen in all (enough to know
// whether the body is longer than the limit) or the body ends, for at most timeout. It reads nothing
// when the handler read up to the Content-Length (the server delivers no more), and nothing of a body
// the client only sends after "100 Continue" if the handler did not ask for it by reading: sluice must
// not make a client upload what the handler refused.
func (b *requestBody) topUp(timeout time.Duration) {
	b.mu.Lock()
	need := int64(b.limit) + 1 - b.total
	done := b.eof || b.failed || need <= 0 ||
		(b.contentLength >= 0 && b.total >= b.contentLength) ||
		(b.expectsGoAhead && b.total == 0)
	b.mu.Unlock()
	if done {
		return
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		chunk := make([]byte, min(need, 32<<10))
		for {
			b.mu.Lock()
			stop := b.eof || b.failed || b.abandoned || b.total > int64(b.limit)
			b.mu.Unlock()
			if stop {
				return
			}
			if _, err := b.Read(chunk); err != nil {
				return
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		b.mu.Lock()
		b.abandoned, b.timedOut = true, true
		b.mu.Unlock()
	}
}

// captured returns what was kept and what is known of the body's size. Size is exact when the body was
// read to its end, else the Content-Length when known, else the bytes seen.
func (b *requestBody) captured() (content []byte, size int64, truncated, timedOut bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	size = b.total
	if !b.eof && b.contentLength > size {
		size = b.contentLength
	}
	return b.buf, size, size > int64(len(b.buf)), b.timedOut
}

// responseBody is the capped copying writer put in front of Echo's response writer. Writes pass through
// unchanged; the first limit bytes are copied until the capture has been open for timeout (from the
// first write), after which a stream is only counted. It keeps http.Flusher (and FlushError),
// http.Hijacker and Unwrap, so that http.ResponseController, SSE and websocket upgrades work as without it.
type responseBody struct {
	http.ResponseWriter
	limit    int
	timeout  time.Duration
	buf      []byte
	first    time.Time
	timedOut bool
	hijacked bool
}

func (w *responseBody) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	if n > 0 && len(w.buf) < w.limit && !w.timedOut {
		now := time.Now()
		if w.first.IsZero() {
			w.first = now
		} else if now.Sub(w.first) > w.timeout {
			w.timedOut = true
			return n, err
		}
		w.buf = append(w.buf, p[:min(n, w.limit-len(w.buf))]...) // the first append sizes buf to the write, without zeroing it first
	}
	return n, err
}

// FlushError flushes the underlying writer, reporting http.ErrNotSupported when it cannot.
func (w *responseBody) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (w *responseBody) Flush() { _ = w.FlushError() }

// Hijack implements http.Hijacker.
func (w *responseBody) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return conn, rw, err
}

// Unwrap returns the writer it wraps (for http.ResponseController).
func (w *responseBody) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bodyKind is how a body's content is kept.
type bodyKind int

const (
	bodyBinary bodyKind = iota // size and type only (base64 when asked for)
	bodyJSON                   // as JSON when valid, else as redacted text
	bodyForm                   // urlencoded form: text with redacted fields
	bodyText                   // text
	bodySniff                  // no content type: JSON if it looks like JSON, text if it is UTF-8
)

// classify maps a Content-Type (and Content-Encoding) to how the body is kept.
func classify(contentType, contentEncoding string) bodyKind {
	if contentEncoding != "" && !strings.EqualFold(contentEncoding, "identity") {
		return bodyBinary
	}
	mt := contentType
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	mt = strings.TrimSpace(mt)
	if mt == "" {
		return bodySniff
	}
	mt = strings.ToLower(mt) // no allocation when already lower case
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "text/json":
		return bodyJSON
	case mt == "application/x-www-form-urlencoded":
		return bodyForm
	case strings.HasPrefix(mt, "text/"), mt == "application/xml", strings.HasSuffix(mt, "+xml"),
		mt == "application/javascript", mt == "application/x-ndjson", mt == "application/graphql",
		mt == "application/yaml", mt == "application/x-yaml":
		return bodyText
	}
	return bodyBinary
}

// bodyOptions is what buildBody needs of the middleware's configuration.
type bodyOptions struct {
	redact *redact.Redactor
	base64 bool
}

// buildBody makes an event body of captured content in b, and returns b, or nil when there is no body.
// size is the original size as far as known. Valid JSON keeps its structure with the values of secret
// keys replaced; forms have the values of secret fields replaced; everything else (JSON that is
// malformed or cut at the capture limit, NDJSON, XML, text) is redacted by the key/value shapes and
// value detectors of the policy, or left out when the policy says so: it is never stored raw.
func buildBody(b *event.Body, content []byte, size int64, truncated, timedOut bool, contentType, contentEncoding string, o *bodyOptions) *event.Body {
	if size == 0 && !timedOut {
		return nil
	}
	*b = event.Body{ContentType: event.SafeString(contentType), Size: size, Truncated: truncated, TimedOut: timedOut}
	if len(content) == 0 {
		return b
	}
	kind := classify(contentType, contentEncoding)
	if kind == bodySniff || (kind == bodyForm && looksLikeJSON(content)) { // curl -d '{...}' sends a form
		switch {
		case looksLikeJSON(content):
			kind = bodyJSON
		case utf8.Valid(event.TrimPartialRune(content)):
			kind = bodyText
		default:
			kind = bodyBinary
		}
	}
	switch kind {
	case bodyJSON:
		if !truncated {
			if out, ok := rewriteJSON(content, o.redact); ok {
				b.JSON = out
				return b
			}
		}
		unparsed(b, content, truncated, o.redact)
	case bodyForm:
		b.Text = o.redact.Form(event.SafeBytes(content, truncated))
	case bodyText:
		unparsed(b, content, truncated, o.redact)
	default:
		if o.base64 {
			b.Base64 = base64.StdEncoding.EncodeToString(content)
		}
	}
	return b
}

// unparsed keeps a body that could not be parsed as redacted text, or leaves it out.
func unparsed(b *event.Body, content []byte, truncated bool, r *redact.Redactor) {
	if r.OmitsUnparsed() {
		b.Omitted = "unparsed"
		return
	}
	b.Text = r.Text(event.SafeBytes(content, truncated))
}

// rewriteJSON validates a JSON document and, in the same pass (event.SafeJSON, the one JSON scanner),
// makes it storable and redacts it with red when not nil: the value of every object member whose key
// red.BodyKey says is secret (at any depth) is replaced as a whole with the replacement as a JSON
// string, and every other key and string is redacted as red.JSONString says (a URL with a token, a
// card number in a note). It returns the input itself when nothing had to change (no allocation), and
// ok=false when the input is not one complete JSON value (or is nested deeper than
// event.MaxJSONDepth).
func rewriteJSON(in []byte, red *redact.Redactor) (out []byte, ok bool) {
	var rw event.JSONRewriter // nil, not a nil *Redactor: nothing to ask
	if red != nil {
		rw = red
	}
	out, err := event.SafeJSON(in, rw)
	return out, err == nil
}

func looksLikeJSON(p []byte) bool {
	i := skipSpace(p, 0)
	return i < len(p) && (p[i] == '{' || p[i] == '[')
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}
