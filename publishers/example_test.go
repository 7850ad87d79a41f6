package publishers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/publishers"
)

func ExampleWithConfig() {
	// In a service the Publisher is sluice's bus; here it prints what it is given.
	print := publishers.PublisherFunc(func(_ context.Context, e *event.Event) error {
		fmt.Println(e.Level, e.Message, e.RequestID)
		fmt.Println(" request:", string(e.Request.Body.JSON), e.Request.Headers["Authorization"])
		fmt.Println(" response:", string(e.Response.Body.JSON))
		return nil
	})
	e := echo.New()
	e.Use(middleware.Recover()) // outer: sluice logs a panic, then Recover answers 500
	e.Use(publishers.WithConfig(publishers.Config{Publisher: print, Service: "users"}))
	e.POST("/users/:id", func(c echo.Context) error {
		var u map[string]any
		if err := c.Bind(&u); err != nil {
			return err
		}
		return c.JSON(201, map[string]any{"id": c.Param("id"), "name": u["name"]})
	})

	req := httptest.NewRequest("POST", "/users/7", strings.NewReader(`{"name":"ada","password":"hunter2"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer abc")
	req.Header.Set("X-Request-ID", "req-1")
	e.ServeHTTP(httptest.NewRecorder(), req)
	// Output:
	// INFO POST /users/:id 201 req-1
	//  request: {"name":"ada","password":"[REDACTED]"} [[REDACTED]]
	//  response: {"id":"7","name":"ada"}
}

func ExampleNewHandler() {
	print := publishers.PublisherFunc(func(_ context.Context, e *event.Event) error {
		attrs, _ := json.Marshal(e.Attrs)
		fmt.Println(e.Kind, e.Level, e.Message, e.RequestID, string(attrs))
		return nil
	})
	h, err := publishers.NewHandler(publishers.HandlerOptions{
		Publisher: print,
		Service:   "users",
		// Logs still reach stdout (here without the time, to keep the example's output stable).
		Next: slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}),
	})
	if err != nil {
		panic(err)
	}
	logger := slog.New(h).With("component", "billing")

	// The middleware puts the request's ids in its context; application code passes the context on.
	ctx := publishers.ContextWithCorrelation(context.Background(), publishers.Correlation{RequestID: "req-1"})
	logger.WarnContext(ctx, "card declined", slog.Group("card", "brand", "visa", "attempt", 2))
	// Output:
	// level=WARN msg="card declined" component=billing card.brand=visa card.attempt=2 request_id=req-1
	// app WARN card declined req-1 {"card":{"attempt":2,"brand":"visa"},"component":"billing"}
}
