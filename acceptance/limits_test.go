package acceptance_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/publishers"
)

// A header flood (anonymous 404s, each with about 960 KB of headers, as much as Go's server takes) is
// stored within the capture limits: every stored row and every archived line of such a request is a
// small fraction of what was sent, and each says how many header lines it left out.
func TestHeaderFloodIsStoredWithinTheLimits(t *testing.T) {
	d := startDemo(t, shortFlush)
	const requests = 200
	value := strings.Repeat("v", 3900)
	client := &http.Client{Timeout: 30 * time.Second}
	sent := 0
	for i := range requests {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/flood/%d?q=%s", d.base, i, strings.Repeat("q", 2000)), nil)
		for h := range 240 {
			req.Header.Add(fmt.Sprintf("X-Flood-%03d", h), value)
		}
		req.Header.Set("X-Request-ID", fmt.Sprintf("flood-%03d", i))
		if i == 0 {
			for k, vs := range req.Header {
				sent += len(k) + len(vs[0])
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("request %d: status %d, want 404", i, resp.StatusCode)
		}
	}
	if code := d.stop(60 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	limits := publishers.DefaultLimits()
	// What a request may store: its headers within MaxHeaderBytes (and a marker per cut value), the
	// query, path and user agent within theirs, and the rest of the event's fields.
	bound := limits.MaxHeaderBytes + limits.MaxQueryBytes + limits.MaxPathBytes + limits.MaxUserAgentBytes + 4<<10
	ctx, conn := connect(t, d.dsn)
	rows, err := conn.Query(ctx, `SELECT request_id, octet_length(t::text), coalesce((request->>'headers_dropped')::int, 0)
		FROM application_logs t WHERE request_id LIKE 'flood-%'`)
	if err != nil {
		t.Fatal(err)
	}
	n, largest, total := 0, 0, 0
	for rows.Next() {
		var id string
		var size, dropped int
		if err := rows.Scan(&id, &size, &dropped); err != nil {
			t.Fatal(err)
		}
		n++
		total += size
		largest = max(largest, size)
		if size > bound || dropped == 0 {
			t.Errorf("%s: stored row of %d bytes (bound %d), %d header lines dropped", id, size, bound, dropped)
		}
	}
	rows.Close()
	if n != requests {
		t.Fatalf("%d rows, want %d", n, requests)
	}
	archived, _ := blobEvents(t, d.azure, d.cont)
	lines := 0
	for id, evs := range archived {
		if !strings.HasPrefix(id, "flood-") {
			continue
		}
		for _, e := range evs {
			lines++
			if len(e.Raw) > bound || e.Request == nil || e.Request.HeadersDropped == 0 {
				t.Errorf("%s: archived line of %d bytes (bound %d)", id, len(e.Raw), bound)
			}
		}
	}
	if lines != requests {
		t.Fatalf("%d archived lines, want %d", lines, requests)
	}
	t.Logf("%d requests of %d header bytes each: rows of at most %d bytes (%d in all), bound %d", requests, sent, largest, total, bound)
}
