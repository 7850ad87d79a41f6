package acceptance_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The console sink, declared in YAML like any other route: every request's event is one line of the
// text file it names (human-readable), its application log lines are there too, and the archive and
// PostgreSQL go on as before. Nothing but the route and the console section is configured for it.
func TestConsoleSinkFromYAML(t *testing.T) {
	dir := t.TempDir()
	text, jsonl := filepath.Join(dir, "console.log"), filepath.Join(dir, "console.ndjson")
	d := startDemo(t, "routes:\n"+
		"  - {name: postgres, sink: postgres, levels: [WARN, ERROR], batch: {max_wait: 300ms}}\n"+
		"  - {name: blob, sink: blob, batch: {max_wait: 500ms}}\n"+
		"  - {name: watch, sink: console, batch: {max_wait: 100ms}}\n"+
		"console: {target: "+text+", format: text}\n",
	)
	reqs := burst(200)
	send(t, d.base, reqs)
	if code := d.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if !strings.Contains(d.stdout.String(), "route watch      every level -> console "+text+", text lines") {
		t.Errorf("the demo does not say where the console route goes:\n%s", d.stdout)
	}
	data, err := os.ReadFile(text)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	byID := map[string]int{}
	for _, l := range lines {
		for _, r := range reqs {
			if strings.HasSuffix(l, " "+r.id) || strings.Contains(l, " "+r.id+" ") { // its error, if any, follows
				byID[r.id]++
			}
		}
	}
	for _, r := range reqs {
		if byID[r.id] != 1 {
			t.Errorf("request %s: %d console lines, want 1", r.id, byID[r.id])
		}
	}
	if !strings.Contains(string(data), "the demo failed on purpose") {
		t.Errorf("no application log line on the console")
	}
	lines2, _ := blobEvents(t, d.azure, d.cont)
	checkStored(t, reqs, httpRows(t, d.dsn), lines2)
	t.Logf("%d console lines for %d requests (and their application logs), the first: %q", len(lines), len(reqs), lines[0])

	// The JSON format, from the environment this time: lines the other sinks' readers understand.
	d2 := startDemo(t, "routes:\n  - {name: watch, sink: console, batch: {max_wait: 100ms}}\n",
		"SLUICE_CONSOLE_TARGET="+jsonl, "SLUICE_POSTGRES_ENABLED=false")
	reqs2 := burst(50)
	send(t, d2.base, reqs2)
	if code := d2.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	f, err := os.Open(jsonl)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var e struct {
			RequestID string `json:"request_id"`
			Kind      string `json:"kind"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not a JSON line: %v: %q", err, sc.Text())
		}
		if e.Kind == "http" {
			seen[e.RequestID] = true
		}
	}
	for _, r := range reqs2 {
		if !seen[r.id] {
			t.Errorf("request %s: no JSON line", r.id)
		}
	}
}
