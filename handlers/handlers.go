// Package handlers owns the HTTP handlers that sluice serves itself: the demo service's example routes
// and the operations endpoints (/metrics, /healthz, /readyz). It knows nothing of how events are
// captured or stored: the operations handlers read what they report through the Ops functions.
package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// Demo registers the demo service's example routes on e:
//
//	GET  /hello       200 {"message":"hello"}
//	POST /echo        200, the JSON body sent back (400 when it is not JSON)
//	GET  /fail        500, after logging an application error
//	POST /login       401, after logging the failed attempt with what the client sent (JSON or form),
//	                  credentials included, and echoing its token in response headers, as careless
//	                  applications do: what sluice stores shows them redacted
//	GET  /panic       the handler panics
//	GET  /slow?ms=N   200 after N milliseconds (at most 60 s)
//
// log receives the application logs the routes write with the request's context.
func Demo(e *echo.Echo, log *slog.Logger) {
	e.GET("/hello", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"message": "hello"})
	})
	e.POST("/echo", func(c echo.Context) error {
		var body any
		if err := c.Bind(&body); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "the body must be JSON").SetInternal(err)
		}
		return c.JSON(http.StatusOK, body)
	})
	e.POST("/login", func(c echo.Context) error {
		form := map[string]any{}
		if err := c.Bind(&form); err != nil {
			form["unreadable"] = err.Error()
		}
		token := fmt.Sprint(form["token"])
		c.Response().Header().Set("X-Refresh-Token", token)
		c.Response().Header().Set("Location", "/login?retry=1&session_token="+url.QueryEscape(token))
		log.WarnContext(c.Request().Context(), fmt.Sprintf("login failed for %v with password=%v", form["user"], form["password"]),
			"user", form["user"], "password", form["password"], slog.Any("form", form),
			slog.Group("auth", "token", token), "error", fmt.Errorf("auth backend refused token=%s", token))
		return echo.NewHTTPError(http.StatusUnauthorized, "invalid credentials").
			SetInternal(fmt.Errorf("credential check failed for password=%v", form["password"]))
	})
	e.GET("/fail", func(c echo.Context) error {
		log.ErrorContext(c.Request().Context(), "the demo failed on purpose", "route", "/fail")
		return echo.NewHTTPError(http.StatusInternalServerError, "failed on purpose")
	})
	e.GET("/panic", func(c echo.Context) error {
		panic("the demo panicked on purpose")
	})
	e.GET("/slow", func(c echo.Context) error {
		ms, err := strconv.Atoi(c.QueryParam("ms"))
		if err != nil || ms < 0 || ms > 60_000 {
			return echo.NewHTTPError(http.StatusBadRequest, "ms must be a number of milliseconds from 0 to 60000")
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-c.Request().Context().Done():
			return c.Request().Context().Err()
		}
		log.InfoContext(c.Request().Context(), "slept", "ms", ms)
		return c.JSON(http.StatusOK, map[string]int{"slept_ms": ms})
	})
}

// Ops is what the operations endpoints report.
type Ops struct {
	// Metrics serves Prometheus metrics.
	Metrics http.Handler
	// Ready reports readiness and a JSON-encodable body describing it.
	Ready func(ctx context.Context) (ready bool, body any)
}

// Register mounts /metrics, /healthz (the process is alive) and /readyz (Ops.Ready, as JSON: 200 when
// ready, 503 when not) on e. Skipper-style middleware of the host applies to them as to any route.
func (o Ops) Register(e *echo.Echo) {
	e.GET("/metrics", echo.WrapHandler(o.Metrics))
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		ready, body := o.Ready(c.Request().Context())
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		return c.JSON(status, body)
	})
}

// IsOps reports whether a request is for an operations endpoint: the demo's logging middleware skips
// those so that scrapes and probes do not fill the logs.
func IsOps(c echo.Context) bool {
	switch c.Path() {
	case "/metrics", "/healthz", "/readyz":
		return true
	}
	return false
}
