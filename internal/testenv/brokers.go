package testenv

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// Redis returns the URL of the Redis that tests use (SLUICE_TEST_REDIS_URL, by default
// redis://127.0.0.1:6379/0), failing the test when nothing answers there.
func Redis(t testing.TB) string {
	return brokerURL(t, "SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", "6379")
}

// NATS returns the URL of the NATS server with JetStream that tests use (SLUICE_TEST_NATS_URL, by
// default nats://127.0.0.1:4222), failing the test when nothing answers there.
func NATS(t testing.TB) string {
	return brokerURL(t, "SLUICE_TEST_NATS_URL", "nats://127.0.0.1:4222", "4222")
}

// brokerURL returns the URL in the variable env, or def, once a TCP connection to it succeeds.
func brokerURL(t testing.TB, env, def, port string) string {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("testenv: %s=%q: %v", env, raw, err)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("testenv: nothing answers at %s (%s; .ci/run starts it with the command in its broker step): %v", addr, env, err)
	}
	_ = c.Close()
	return raw
}
