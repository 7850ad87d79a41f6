package sluice

import (
	"testing"

	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
)

func TestRouteMatching(t *testing.T) {
	httpEvent := func(level event.Level, path string) *event.Event {
		e := event.New(level, event.KindHTTP, "m")
		e.Path = path
		return e
	}
	appEvent := event.New(event.LevelError, event.KindApp, "m")
	cases := []struct {
		name  string
		route Route
		e     *event.Event
		want  bool
	}{
		{"no filter takes all", Route{}, httpEvent(event.LevelDebug, "/x"), true},
		{"level in", Route{Levels: []string{"WARN", "error"}}, httpEvent(event.LevelError, "/x"), true},
		{"level out", Route{Levels: []string{"WARN", "ERROR"}}, httpEvent(event.LevelInfo, "/x"), false},
		{"kind in", Route{Kinds: []string{"app"}}, appEvent, true},
		{"kind out", Route{Kinds: []string{"http"}}, appEvent, false},
		{"prefix pattern", Route{Paths: []string{"/api/*"}}, httpEvent(event.LevelInfo, "/api/v1/users/7"), true},
		{"prefix pattern excludes", Route{Paths: []string{"/api/*"}}, httpEvent(event.LevelInfo, "/apix"), false},
		{"glob pattern", Route{Paths: []string{"/users/*/orders"}}, httpEvent(event.LevelInfo, "/users/7/orders"), true},
		{"glob pattern is one segment", Route{Paths: []string{"/users/*/orders"}}, httpEvent(event.LevelInfo, "/users/7/x/orders"), false},
		{"exact path", Route{Paths: []string{"/health"}}, httpEvent(event.LevelInfo, "/health"), true},
		{"app event has no path", Route{Paths: []string{"/*"}}, appEvent, false},
		{"all filters", Route{Levels: []string{"WARN"}, Kinds: []string{"http"}, Paths: []string{"/api/*"}}, httpEvent(event.LevelWarn, "/api/x"), true},
	}
	for _, tc := range cases {
		if got := matcher(tc.route)(tc.e); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A batch subscriber built without subscribers.RedeliverAfter waits as long as the bus does by
// default: one default for bus.redelivery_delay, whoever holds the failed events.
func TestBatchRedeliveryDefaultsAreTheBus(t *testing.T) {
	if subscribers.DefaultRedeliveryDelay != bus.DefaultRedeliveryDelay || subscribers.DefaultMaxRedeliveryDelay != bus.DefaultMaxRedeliveryDelay {
		t.Fatalf("subscribers' redelivery defaults %v, %v; the bus's %v, %v", subscribers.DefaultRedeliveryDelay,
			subscribers.DefaultMaxRedeliveryDelay, bus.DefaultRedeliveryDelay, bus.DefaultMaxRedeliveryDelay)
	}
}
