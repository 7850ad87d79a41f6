// Package publishers turns HTTP requests (an Echo middleware) and application log records (a slog.Handler)
// into sluice events and hands them to a Publisher without ever blocking the caller.
//
// It owns everything that happens on the request path: capturing (and capping) request and response
// bodies, bounding every other captured field (Limits), redacting secrets before an event leaves the
// request (with the policy of package redact, on every channel), making every string safe for JSON and
// PostgreSQL (valid UTF-8, no NUL, no \u0000 or lone surrogates in JSON, no numbers jsonb refuses: the
// one rule of package event, event.SafeString and event.SafeJSON, which also redacts a JSON body),
// mapping levels, sampling, and correlation (request id and W3C trace context, also put into the
// request's context.Context so that application logs written with it carry the same ids).
//
// It must not block a request, must not import the root package or the subscribers, and knows nothing of
// the bus behind Publisher: a Publisher that cannot take an event returns an error, and the event is
// counted as dropped.
//
// # The middleware
//
// Register it after Echo's Recover, so that Recover is outer:
//
//	e.Use(middleware.Recover())
//	e.Use(publishers.WithConfig(publishers.Config{Publisher: p}))
//
// Then a panic is logged as ERROR with its stack and status 500 (what Recover sends), and Recover and
// the error handler behave as without sluice. A handler's error is handed to the HTTPErrorHandler by the
// middleware itself, so that the event has the status the client received; the middleware returns nil.
//
// Request bodies are captured as the handler reads them (it reads the whole, unchanged stream); what
// the handler did not read is read afterwards, up to the limit plus one byte, for at most
// RequestBodyTimeout. Response bodies are copied by a capped writer that keeps http.Flusher,
// http.Hijacker and Unwrap: streaming, server-sent events and websocket upgrades work as without it.
package publishers
