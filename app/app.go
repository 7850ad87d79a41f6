// Package app owns the life of a sluice process: listening, serving until a signal, and shutting
// down in the one order that loses nothing (stop accepting HTTP, finish the requests in flight, then
// flush the pipeline with a context of its own, then exit with a code that says whether everything
// was written). It knows nothing of what the pipeline is: it gets a Flush function.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// Server is one HTTP service with an optional admin listener and an ordered shutdown.
type Server struct {
	// Addr is where Echo listens ("127.0.0.1:8080"; port 0 picks a free one).
	Addr string
	Echo *echo.Echo
	// AdminAddr and Admin, when both set, serve the operations endpoints on a separate listener.
	AdminAddr string
	Admin     *echo.Echo
	// ShutdownTimeout bounds the whole shutdown: finishing requests in flight and the flush.
	ShutdownTimeout time.Duration
	// Flush runs after the HTTP server stopped accepting and finished its requests: it must write
	// everything accepted, within ctx.
	Flush func(ctx context.Context) error
	// OnListen, when set, is told the address actually listened on (before serving starts).
	OnListen func(addr net.Addr)
	Log      *slog.Logger
}

// Run serves until ctx ends (a signal, with signal.NotifyContext), then shuts down in order. It
// returns nil only when the server stopped cleanly and Flush wrote everything.
func (s *Server) Run(ctx context.Context) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Addr, err)
	}
	s.Echo.Listener = ln
	s.Echo.HideBanner, s.Echo.HidePort = true, true
	var adminLn net.Listener
	if s.Admin != nil && s.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", s.AdminAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", s.AdminAddr, err)
		}
		s.Admin.Listener = adminLn
		s.Admin.HideBanner, s.Admin.HidePort = true, true
	}
	if s.OnListen != nil {
		s.OnListen(ln.Addr())
	}
	errc := make(chan error, 2)
	go func() { errc <- s.Echo.Start("") }()
	if adminLn != nil {
		go func() { errc <- s.Admin.Start("") }()
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new requests; flushing what was accepted", "timeout", s.ShutdownTimeout)
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("server stopped", "error", err)
		}
	}
	// A context of its own: the one passed in has ended already.
	sctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout)
	defer cancel()
	var errs []error
	if err := s.Echo.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if s.Flush != nil {
		if err := s.Flush(sctx); err != nil {
			errs = append(errs, err)
		}
	}
	if adminLn != nil {
		if err := s.Admin.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
		}
	}
	return errors.Join(errs...)
}
