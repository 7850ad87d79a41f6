package brokers_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/sluicelog/sluice/brokers"
)

type fakeSettings struct{ Stream string }

type fakeBroker struct{ brokers.Broker }

// DriverOf hands Open the configured settings, the defaults when there are none, refuses settings of
// another type, and returns a nil Broker (not a typed nil) with Open's error.
func TestDriverOf(t *testing.T) {
	var got fakeSettings
	d := brokers.DriverOf("fake", "fake://", func() fakeSettings { return fakeSettings{Stream: "default"} },
		func(_ context.Context, url string, s fakeSettings, _ watermill.LoggerAdapter) (*fakeBroker, error) {
			got = s
			if url == "bad" {
				return nil, errors.New("bad url")
			}
			return &fakeBroker{}, nil
		})
	if s := d.Settings().(*fakeSettings); s.Stream != "default" {
		t.Errorf("Settings() = %+v", s)
	}
	if _, err := d.Open(context.Background(), "u", fakeSettings{Stream: "set"}, nil); err != nil || got.Stream != "set" {
		t.Errorf("Open with settings: %v, got %+v", err, got)
	}
	if _, err := d.Open(context.Background(), "u", nil, nil); err != nil || got.Stream != "default" {
		t.Errorf("Open without settings: %v, got %+v", err, got)
	}
	if _, err := d.Open(context.Background(), "u", &fakeSettings{}, nil); err == nil || !strings.Contains(err.Error(), "*brokers_test.fakeSettings") {
		t.Errorf("Open with a pointer: %v, want an error naming the type", err)
	}
	if b, err := d.Open(context.Background(), "bad", nil, nil); err == nil || b != nil {
		t.Errorf("Open that fails = %v, %v; want nil and the error", b, err)
	}
}
