// Package publishers turns HTTP requests (an Echo middleware) and application log records (a slog.Handler)
// into sluice events and hands them to a Publisher without ever blocking the caller.
//
// It owns everything that happens on the request path: capturing (and capping) request and response
// bodies, redacting secrets before an event leaves the request, making every string safe for JSON and
// PostgreSQL (valid UTF-8, no NUL), mapping levels, sampling, and correlation (request id and W3C trace
// context, also put into the request's context.Context so that application logs carry the same ids).
//
// It must not block a request, must not import the root package or the subscribers, and knows nothing of
// the bus behind Publisher: a Publisher that cannot take an event returns an error, and the event is
// counted as dropped.
package publishers
