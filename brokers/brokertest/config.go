package brokertest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/config"
)

// LoadConfig loads yml as a configuration file, with the environment variables env ("KEY=value"):
// how a driver's test checks that its section bus.<driver> loads from YAML and the environment.
func LoadConfig(t *testing.T, yml string, env []string) (config.Config, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(file, env)
}

// ConfigErrors checks that each configuration file of cases (YAML: the key it must name) is refused
// with an error naming that key, such as bus.redis.claim_idle or bus.url.
func ConfigErrors(t *testing.T, cases map[string]string) {
	t.Helper()
	for yml, key := range cases {
		if _, err := LoadConfig(t, yml, nil); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v, want one naming %s", yml, err, key)
		}
	}
}

// Secret is the password that the bus.url cases of RefusesBadURLs use: no error may show it.
const Secret = "hunter2"

// RefusesBadURLs opens the registered driver with each bus.url of cases (and its default settings),
// and checks that it fails with an error that names bus.url, says what the case maps to, and does
// not show Secret.
func RefusesBadURLs(t *testing.T, driver string, cases map[string]string) {
	t.Helper()
	d, ok := brokers.Lookup(driver)
	if !ok {
		t.Fatalf("no driver %q is registered", driver)
	}
	for raw, want := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := d.Open(ctx, raw, nil, nil)
		cancel()
		if err == nil {
			_ = b.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "bus.url") || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), Secret) {
			t.Errorf("Open(%q) = %v, want an error naming bus.url, saying %q, without the password", raw, err, want)
		}
	}
}
