package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/sluicelog/sluice/brokers"
	"github.com/sluicelog/sluice/bus"
	"github.com/sluicelog/sluice/publishers"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/console"
	"github.com/sluicelog/sluice/subscribers/pgsink"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestEnvOverridesFileOverridesDefault(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	writeFile(t, file, `
service: shop
bus:
  max_events: 500
  max_in_flight: 400
blob:
  container: archive
routes:
  - name: pg
    sink: postgres
    levels: [warn, ERROR]
    batch: {max_events: 100, max_wait: 2s}
  - name: api-archive
    sink: blob
    options: {container: api-logs}
    paths: ["/api/*"]
    batch: {max_events: 300}
    failure_log_interval: 1m
`)
	c, err := Load(file, []string{"SLUICE_BUS_MAX_EVENTS=700", "SLUICE_BREAKER_COOLDOWN=5s", "SLUICE_FAILURE_LOG_INTERVAL=30s", "HOME=/root"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Service != "shop" || c.Bus.MaxEvents != 700 || c.Bus.MaxInFlight != 400 || c.Breaker.Cooldown != 5*time.Second {
		t.Fatalf("got service=%q max_events=%d in_flight=%d cooldown=%v", c.Service, c.Bus.MaxEvents, c.Bus.MaxInFlight, c.Breaker.Cooldown)
	}
	routes := c.EffectiveRoutes()
	if len(routes) != 2 {
		t.Fatalf("routes = %d", len(routes))
	}
	pg, arch := routes[0], routes[1]
	if pg.Batch.MaxEvents != 100 || pg.Batch.MaxWait != 2*time.Second || pg.Batch.MaxBytes != 8<<20 {
		t.Errorf("pg batch = %+v (zero fields must take the sink's defaults)", pg.Batch)
	}
	if pg.Breaker.Cooldown != 5*time.Second || pg.Breaker.Failures != 5 {
		t.Errorf("pg breaker = %+v (must inherit breaker.*)", pg.Breaker)
	}
	if pg.FailureLogInterval != 30*time.Second || arch.FailureLogInterval != time.Minute {
		t.Errorf("failure_log_interval: pg %v (must inherit failure_log_interval), archive %v", pg.FailureLogInterval, arch.FailureLogInterval)
	}
	if arch.Options["container"] != "api-logs" || arch.Batch.MaxWait != 10*time.Second || arch.Batch.MaxEvents != 300 {
		t.Errorf("archive route = %+v", arch)
	}
}

func TestBadValuesNameTheKey(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		env  []string
		yaml string
		want []string // substrings of the error
	}{
		{name: "negative batch size", yaml: "routes:\n  - {name: pg, sink: postgres, batch: {max_events: -5}}\n",
			want: []string{"routes[0](pg).batch.max_events", "-5", "must be positive"}},
		{name: "unknown level", yaml: "routes:\n  - {name: pg, sink: postgres, levels: [WARN, LOUD]}\n",
			want: []string{"routes[0](pg).levels", "LOUD", "unknown level"}},
		{name: "malformed DSN", env: []string{"SLUICE_POSTGRES_DSN=postgres://a:b@host:notaport/db"},
			want: []string{"postgres.dsn (SLUICE_POSTGRES_DSN)", "malformed", "a:****@"}},
		{name: "env not an integer", env: []string{"SLUICE_BUS_MAX_EVENTS=lots"},
			want: []string{"bus.max_events (SLUICE_BUS_MAX_EVENTS)", `"lots"`, "not an integer"}},
		{name: "env negative", env: []string{"SLUICE_BUS_MAX_BYTES=-1"},
			want: []string{"bus.max_bytes (SLUICE_BUS_MAX_BYTES)", "must be positive"}},
		{name: "env bad duration", env: []string{"SLUICE_BREAKER_COOLDOWN=soon"},
			want: []string{"breaker.cooldown (SLUICE_BREAKER_COOLDOWN)", "not a duration"}},
		{name: "unknown env", env: []string{"SLUICE_BUS_MAX_EVENT=1"},
			want: []string{"unknown environment variable SLUICE_BUS_MAX_EVENT"}},
		{name: "unknown yaml key", yaml: "bus:\n  max_eventz: 3\n",
			want: []string{"unknown_yaml_key.yaml:2: bus.max_eventz: unknown key (did you mean max_events?)"}},
		{name: "yaml not a duration", yaml: "breaker:\n  cooldown: 5 seconds\n",
			want: []string{`yaml_not_a_duration.yaml:2: breaker.cooldown = "5 seconds": not a duration (e.g. 500ms, 5s, 1m)`}},
		{name: "yaml route keys", yaml: "routes:\n  - name: x\n    sink: blob\n    batch: {max_wiat: 2s, max_events: lots}\n",
			want: []string{"yaml_route_keys.yaml:4: routes[0].batch.max_wiat: unknown key (did you mean max_wait?)",
				`yaml_route_keys.yaml:4: routes[0].batch.max_events = "lots": not a number`}},
		{name: "yaml sink section key", yaml: "service: s\nconsole:\n  target: stderr\n  colour: true\n",
			want: []string{"yaml_sink_section_key.yaml:4: console.colour: unknown key (did you mean color?)"}},
		{name: "unknown sink", yaml: "routes:\n  - {name: x, sink: s3}\n", want: []string{"routes[0](x).sink", "unknown sink"}},
		{name: "duplicate route", yaml: "routes:\n  - {name: x, sink: blob}\n  - {name: x, sink: blob}\n",
			want: []string{"routes[1](x).name", "already used by routes[0]"}},
		{name: "bad container", env: []string{"SLUICE_BLOB_CONTAINER=Logs_1"}, want: []string{"blob.container (SLUICE_BLOB_CONTAINER)"}},
		{name: "bad gzip level", env: []string{"SLUICE_BLOB_GZIP_LEVEL=12"},
			want: []string{"blob.gzip_level (SLUICE_BLOB_GZIP_LEVEL) = 12: must be 1 (fastest) to 9 (smallest)"}},
		{name: "tiny retention", env: []string{"SLUICE_POSTGRES_RETENTION=720s"},
			want: []string{"postgres.retention (SLUICE_POSTGRES_RETENTION) = 12m0s: must be 0 (keep forever) or at least 1h"}},
		{name: "negative blob retention", yaml: "blob:\n  retention: -1h\n",
			want: []string{"blob.retention (", "negative_blob_retention.yaml:2) = -1h0m0s: must be 0 (keep forever) or at least 1h"}},
		{name: "bad chunk policy", yaml: "routes:\n  - {name: x, sink: blob, chunk: {max_events: -1, linger: -5ms}}\n",
			want: []string{"routes[0](x).chunk.max_events (", "bad_chunk_policy.yaml:2) = -1", "routes[0](x).chunk.linger (", "bad_chunk_policy.yaml:2) = -5ms"}},
		{name: "bad path pattern", yaml: "routes:\n  - {name: x, sink: blob, paths: [\"api/[\"]}\n", want: []string{"routes[0](x).paths"}},
		{name: "negative capture limit", env: []string{"SLUICE_CAPTURE_MAX_HEADERS=-2"},
			want: []string{"capture.max_headers (-2) must not be negative"}},
		{name: "tiny event limit", yaml: "capture:\n  max_event_bytes: 100\n",
			want: []string{"capture.max_event_bytes (", "tiny_event_limit.yaml:2) = 100: must be at least 4096"}},
		{name: "bad redaction key", env: []string{"SLUICE_REDACTION_EXTRA_KEYS=member_no, x"},
			want: []string{"redaction.keys", `"x" is shorter than 2 letters`}},
		{name: "bad unparsed bodies mode", yaml: "redaction:\n  unparsed_bodies: drop\n",
			want: []string{"redaction.unparsed_bodies (\"drop\")"}},
		{name: "bad failure log interval", env: []string{"SLUICE_FAILURE_LOG_INTERVAL=0s"},
			want: []string{"failure_log_interval (SLUICE_FAILURE_LOG_INTERVAL) = 0s: must be positive"}},
		{name: "bad route failure log interval", yaml: "routes:\n  - {name: x, sink: blob, failure_log_interval: -1s}\n",
			want: []string{"routes[0](x).failure_log_interval (", "bad_route_failure_log_interval.yaml:2) = -1s: must be positive"}},
		{name: "postgres route while disabled", env: []string{"SLUICE_POSTGRES_ENABLED=false"},
			want: []string{"routes[0](postgres).sink", "postgres.enabled is false"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := ""
			if tc.yaml != "" {
				file = filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
				writeFile(t, file, tc.yaml)
			}
			_, err := Load(file, tc.env)
			if err == nil {
				t.Fatal("Load succeeded; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestRedactionAndLimitsFromEnvAndFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, "redaction:\n  keep: [author]\n  unparsed_bodies: omit\ncapture:\n  max_headers: 10\n")
	c, err := Load(file, []string{"SLUICE_REDACTION_EXTRA_KEYS=member_no, tenant_key", "SLUICE_CAPTURE_MAX_QUERY_BYTES=100"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Redaction.ExtraKeys, []string{"member_no", "tenant_key"}) || !slices.Equal(c.Redaction.Keep, []string{"author"}) ||
		c.Redaction.UnparsedBodies != "omit" || c.Capture.Limits.MaxHeaders != 10 || c.Capture.Limits.MaxQueryBytes != 100 ||
		c.Capture.Limits.MaxPathBytes != 2048 {
		t.Errorf("redaction %+v, limits %+v", c.Redaction, c.Capture.Limits)
	}
}

func TestRedactedMasksSecrets(t *testing.T) {
	c := Default()
	c.Postgres.DSN = "postgres://app:hunter2@db:5432/logs"
	c.Blob.ConnectionString = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0;BlobEndpoint=http://x"
	r := c.Redacted()
	for _, s := range []string{r.Postgres.DSN, r.Blob.ConnectionString} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, "c2VjcmV0") {
			t.Errorf("secret left in %q", s)
		}
	}
	if c.Postgres.DSN != "postgres://app:hunter2@db:5432/logs" {
		t.Error("Redacted changed the original")
	}
}

func TestKeysHaveEnvNames(t *testing.T) {
	var all []string
	for _, kv := range Default().Values() {
		all = append(all, kv.Key+"="+kv.Env)
	}
	keys := strings.Join(all, " ")
	for _, k := range []string{"postgres.dsn", "blob.connection_string", "blob.container", "blob.dir", "breaker.failures", "breaker.cooldown", "http_addr", "postgres.dsn=SLUICE_POSTGRES_DSN"} {
		if !strings.Contains(keys, k) {
			t.Errorf("Keys() lacks %s", k)
		}
	}
	if EnvName("breaker.cooldown") != "SLUICE_BREAKER_COOLDOWN" {
		t.Error(EnvName("breaker.cooldown"))
	}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Each default has one owner: the package of the setting. The configuration's embedded defaults are
// the owners' (a literal copied here would drift, as bus.max_in_flight once did: 5,000 in the bus,
// 2,000 in the config).
func TestDefaultsHaveOneOwner(t *testing.T) {
	d := Default()
	for _, c := range []struct {
		key       string
		got, want any
	}{
		{"bus.max_events", d.Bus.MaxEvents, bus.DefaultMaxEvents},
		{"bus.max_bytes", d.Bus.MaxBytes, int64(bus.DefaultMaxBytes)},
		{"bus.max_in_flight", d.Bus.MaxInFlight, bus.DefaultMaxInFlight},
		{"bus.redelivery_delay", d.Bus.RedeliveryDelay, bus.DefaultRedeliveryDelay},
		{"bus.max_redelivery_delay", d.Bus.MaxRedeliveryDelay, bus.DefaultMaxRedeliveryDelay},
		{"postgres", d.Postgres, pgsink.DefaultSettings()},
		{"blob", d.Blob, blobsink.DefaultSettings()},
		{"console", *d.Sinks["console"].(*console.Config), console.DefaultConfig()},
		{"capture.request_body_limit", d.Capture.RequestBodyLimit, publishers.DefaultBodyLimit},
		{"capture.response_body_limit", d.Capture.ResponseBodyLimit, publishers.DefaultBodyLimit},
		{"capture.request_body_timeout", d.Capture.RequestBodyTimeout, publishers.DefaultRequestBodyTimeout},
		{"capture.response_body_timeout", d.Capture.ResponseBodyTimeout, publishers.DefaultResponseBodyTimeout},
		{"capture limits", d.Capture.Limits, publishers.DefaultLimits()},
		{"redaction", d.Redaction.Replacement, ""}, // the zero redact.Policy: redact's own defaults
		{"postgres.write_timeout", d.Postgres.WriteTimeout, pgsink.DefaultWriteTimeout},
		{"blob.write_timeout", d.Blob.WriteTimeout, blobsink.DefaultWriteTimeout},
		{"blob.gzip_level", d.Blob.GzipLevel, blobsink.DefaultGzipLevel},
		{"postgres.retention", d.Postgres.Retention, pgsink.DefaultRetention},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: the configuration's default %v differs from its owner's %v", c.key, c.got, c.want)
		}
	}
}

// A registered sink type's section (the console's) is configured like the built-in ones, from YAML
// and the environment, strictly, with nothing declared in this package.
func TestRegisteredSinkSection(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	writeFile(t, file, "console:\n  target: stderr\nroutes:\n  - {name: watch, sink: console}\n")
	c, err := Load(file, []string{"SLUICE_CONSOLE_FORMAT=text"})
	if err != nil {
		t.Fatal(err)
	}
	if got := *c.Sinks["console"].(*console.Config); got.Target != "stderr" || got.Format != "text" {
		t.Errorf("console section %+v", got)
	}
	if s := c.SinkSections()["console"].(console.Config); s.Format != "text" {
		t.Errorf("SinkSections: %+v", s)
	}
	writeFile(t, file, "console:\n  colour: true\n")
	if _, err := Load(file, nil); err == nil || !strings.Contains(err.Error(), "console") || !strings.Contains(err.Error(), "colour") {
		t.Errorf("unknown key in the console section: %v", err)
	}
	if _, err := Load("", []string{"SLUICE_CONSOLE_FORMAT=xml"}); err == nil || !strings.Contains(err.Error(), "console") || !strings.Contains(err.Error(), "xml") {
		t.Errorf("bad console format: %v", err)
	}
}

// Every YAML block of the README loads as it is: what the README shows works when pasted.
func TestReadmeYAMLLoads(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(readme), "```yaml\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("no yaml block in the README")
	}
	for i, b := range blocks {
		block := b[:strings.Index(b, "```")]
		file := filepath.Join(t.TempDir(), "readme.yaml")
		writeFile(t, file, block)
		if _, err := Load(file, nil); err != nil {
			t.Errorf("README yaml block %d does not load: %v\n%s", i+1, err, block)
		}
	}
}

// Sampling and levels are configuration like the rest: from YAML, validated by key.
func TestSamplingAndLevelsFromYAML(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, "capture:\n  sampling:\n    rules:\n      - {route: /healthz, rate: 0}\n      - {route: /api/*, method: get, rate: 0.1}\n  levels: {\"404\": INFO, 5xx: WARN, panic: ERROR}\n")
	c, err := Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Capture.Sampling.Rules) != 2 || c.Capture.Sampling.Rules[1].Rate != 0.1 || c.Capture.Levels["5xx"] != "WARN" {
		t.Errorf("sampling %+v, levels %v", c.Capture.Sampling, c.Capture.Levels)
	}
	levels := c.Capture.Levels.Func()
	for _, tc := range []struct {
		status   int
		panicked bool
		want     string
	}{{404, false, "INFO"}, {400, false, "WARN"}, {503, false, "WARN"}, {500, true, "ERROR"}, {200, false, "INFO"}} {
		if got := levels(tc.status, nil, tc.panicked); string(got) != tc.want {
			t.Errorf("level of %d (panic %v) = %s, want %s", tc.status, tc.panicked, got, tc.want)
		}
	}
	for yaml, want := range map[string]string{
		"capture:\n  sampling:\n    rules: [{route: /a, rate: 2}]\n": "capture.sampling: `Sampling.Rules[0].Rate` (2)",
		"capture:\n  levels: {\"4xx\": LOUD}\n":                      `capture.levels.4xx ("LOUD")`,
		"capture:\n  levels: {\"6xx\": INFO}\n":                      `capture.levels: "6xx" is not a status code`,
	} {
		writeFile(t, file, yaml)
		if _, err := Load(file, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", yaml, err, want)
		}
	}
}

// testDriverSettings is a broker driver's settings, registered by the test below as driver "testmq".
type testDriverSettings struct {
	Stream   string `yaml:"stream"`
	Replicas int    `yaml:"replicas"`
}

func (s testDriverSettings) Validate() error {
	if s.Replicas <= 0 {
		return &subscribers.SettingError{Key: "replicas", Value: s.Replicas, Msg: "must be positive"}
	}
	return nil
}

func init() {
	brokers.Register(brokers.Driver{Name: "testmq", URL: "testmq://host",
		Settings: func() any { return &testDriverSettings{Stream: "logs", Replicas: 1} },
		Open: func(context.Context, string, any, watermill.LoggerAdapter) (brokers.Broker, error) {
			return nil, errors.New("not a real driver")
		}})
}

// A registered broker driver's section is bus.<driver>, configured from YAML and the environment,
// strictly, with errors naming its keys; an unknown driver is refused naming the registered ones.
func TestBusDriverSection(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, "bus:\n  driver: testmq\n  url: testmq://10.0.0.1\n  testmq:\n    stream: audit\n")
	c, err := Load(file, []string{"SLUICE_BUS_TESTMQ_REPLICAS=3"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.BusSettings().(testDriverSettings); got.Stream != "audit" || got.Replicas != 3 {
		t.Errorf("bus.testmq = %+v", got)
	}
	if _, ok := c.SinkSections()["bus.testmq"]; ok {
		t.Error("a driver's section is listed as a sink's")
	}
	for yml, want := range map[string]string{
		"bus:\n  testmq:\n    streem: x\n":                                          "bus.testmq.streem",
		"bus:\n  driver: testmq\n  url: x\n  testmq:\n    replicas: 0\n":            "bus.testmq.replicas",
		"bus:\n  driver: testmq\n":                                                  "bus.url",
		"bus:\n  driver: kafkaa\n":                                                  "testmq",
		"bus:\n  forward:\n    max_concurrent_publishes: 0\n":                       "bus.forward.max_concurrent_publishes",
		"bus:\n  forward:\n    compression: gzip\n":                                 "bus.forward.compression",
		"bus:\n  driver: testmq\n  url: x\ncapture:\n  max_event_bytes: 16777216\n": "capture.max_event_bytes",
		"bus:\n  forward:\n    chunk:\n      max_bytes: 1073741824\n":               "bus.forward.chunk.max_bytes",
	} {
		writeFile(t, file, yml)
		if _, err := Load(file, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %s", yml, err, want)
		}
	}
}

// bus.url's password never reaches a log line or `sluice config`.
func TestBusURLPasswordIsMasked(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:secret@127.0.0.1:5672/":                   "amqp://guest:xxxxx@127.0.0.1:5672/",
		"host=db user=sluice password=secret dbname=logs":       "host=db user=sluice password=xxxxx dbname=logs",
		"127.0.0.1:9092,127.0.0.1:9093":                         "127.0.0.1:9092,127.0.0.1:9093",
		"postgres://sluice:secret@db:5432/logs?sslmode=disable": "postgres://sluice:xxxxx@db:5432/logs?sslmode=disable",
	} {
		c := Default()
		c.Bus.URL = in
		if got := c.Redacted().Bus.URL; got != want || strings.Contains(got, "secret") {
			t.Errorf("%s: redacted %s, want %s", in, got, want)
		}
	}
}
