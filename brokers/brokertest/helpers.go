package brokertest

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/config"
)

// What a driver's own tests share: that it is registered, that it refuses a bad bus.url, and the
// subscribe-and-wait steps of tests beyond the suite.

// Registered checks that driver name is registered and that its Settings are defaults (a value, not
// the pointer Settings returns) and validate.
func Registered(t *testing.T, name string, defaults any) {
	t.Helper()
	d, ok := brokers.Lookup(name)
	if !ok {
		t.Fatalf("driver %s not registered (brokers.Register in the package's init)", name)
	}
	if d.Settings == nil {
		t.Fatalf("driver %s has no Settings", name)
	}
	got := reflect.ValueOf(d.Settings()).Elem().Interface()
	if !reflect.DeepEqual(got, defaults) {
		t.Errorf("driver %s: Settings() = %+v, want %+v", name, got, defaults)
	}
	if v, ok := got.(interface{ Validate() error }); !ok {
		t.Errorf("driver %s: its settings %T have no Validate() error", name, got)
	} else if err := v.Validate(); err != nil {
		t.Errorf("driver %s: the defaults do not validate: %v", name, err)
	}
}

// RefusesURLs checks that driver name's Open fails for each url with an error that names bus.url and
// does not show secret (a password in the urls).
func RefusesURLs(t *testing.T, name string, settings any, secret string, urls ...string) {
	t.Helper()
	d, ok := brokers.Lookup(name)
	if !ok {
		t.Fatalf("driver %s not registered", name)
	}
	for _, url := range urls {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		b, err := d.Open(ctx, url, settings, nil)
		cancel()
		t.Logf("Open(%q): %v", url, err)
		if err == nil {
			_ = b.Close()
			t.Errorf("Open(%q) = nil error, want one naming bus.url", url)
			continue
		}
		if !strings.Contains(err.Error(), "bus.url") {
			t.Errorf("Open(%q) = %v, want an error naming bus.url", url, err)
		}
		if secret != "" && strings.Contains(err.Error(), secret) {
			t.Errorf("Open(%q) error shows the password: %v", url, err)
		}
	}
}

// Subscribe makes a new member of group and subscribes it to topic until the test ends.
func Subscribe(t testing.TB, b brokers.Broker, group, topic string) (message.Subscriber, <-chan *message.Message) {
	t.Helper()
	s, err := b.Subscriber(group)
	if err != nil {
		t.Fatalf("Subscriber(%s): %v", group, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", topic, err)
	}
	return s, ch
}

// Publish publishes n chunks of events events each (Chunk) to topic and returns their UUIDs.
func Publish(t testing.TB, b brokers.Broker, topic string, n, events int) map[string]bool {
	t.Helper()
	sent := make(map[string]bool, n)
	for range n {
		m := Chunk(events)
		sent[m.UUID] = true
		if err := b.Publisher().Publish(topic, m); err != nil {
			t.Fatalf("Publish(%s): %v", topic, err)
		}
	}
	return sent
}

// Next returns the next message from ch, failing the test when none comes within 30 s.
func Next(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	return receive(t, ch, 1, false, 30*time.Second)[0]
}

// SettingErrors checks that the configuration (bus.driver name, bus.url url) refuses each environment
// variable of bad with an error naming its key (bus.<driver>.<key>), and returns the settings that
// ok (environment variables) configure.
func SettingErrors(t *testing.T, name, url string, ok []string, bad map[string]string) any {
	t.Helper()
	base := []string{"SLUICE_BUS_DRIVER=" + name, "SLUICE_BUS_URL=" + url}
	c, err := config.Load("", append(base, ok...))
	if err != nil {
		t.Fatalf("%v: %v", ok, err)
	}
	for env, key := range bad {
		if _, err := config.Load("", append(base, env)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v, want one naming %s", env, err, key)
		}
	}
	return c.BusSettings()
}
