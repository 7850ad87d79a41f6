package logquery_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/logquery"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

// getOnly hides a store's Open: the archive falls back to Get.
type getOnly struct{ blobsink.Store }

// archiveOf writes events through the archive sink into a fresh directory store.
func archiveOf(t *testing.T, events []*event.Event, prefix string) *blobsink.DirStore {
	t.Helper()
	store, err := blobsink.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sink, err := blobsink.New(store, blobsink.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Write(context.Background(), subscribers.NewBatch(events)); err != nil {
		t.Fatal(err)
	}
	return store
}

func query(t *testing.T, a *logquery.Archive, f logquery.Filter) (logquery.ArchiveResult, []string, error) {
	t.Helper()
	var got []string
	res, err := a.Scan(context.Background(), f, func(e *event.Event) error {
		got = append(got, e.Message)
		return nil
	})
	return res, got, err
}

// Lines that are not events are skipped and counted, whatever the blob's name below its hour; a
// blob that is not gzip is read as it is; a store without Open is read through Get.
func TestArchiveSkipsBadLinesAndReadsAnyBlobOfTheHour(t *testing.T) {
	_, events := fixture()
	store := archiveOf(t, events, "audit")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	bad := event.New(event.LevelError, event.KindApp, "after a bad line")
	bad.TS = t0.Add(time.Minute)
	line, _ := bad.AppendJSON(nil)
	zw.Write([]byte("not json\n\n{\"ts\":\"2026-11-30T10:02:00Z\",\"level\":\"ERROR\"}\n" + string(line) + "\n"))
	zw.Close()
	ctx := context.Background()
	if err := store.Put(ctx, "audit/2026/11/30/10/some-other-name.gz", gz.Bytes(), "", ""); err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "audit/2026/11/30/10/plain.ndjson", append(line[:len(line):len(line)], '\n'), "", ""); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]blobsink.Store{"dir": store, "get only": getOnly{store}} {
		a, err := logquery.NewArchive(s, logquery.ArchiveConfig{Prefix: "audit"})
		if err != nil {
			t.Fatal(err)
		}
		res, got, err := query(t, a, logquery.Filter{Since: t0, Until: t0.Add(time.Hour), Levels: []event.Level{event.LevelError}})
		if err != nil || strings.Join(got, "|") != "after a bad line|after a bad line" {
			t.Errorf("%s: %v, %v", name, got, err)
		}
		if res.BadLines != 2 || !strings.Contains(res.FirstBad, "some-other-name.gz line 1") {
			t.Errorf("%s: bad lines %d, first %q; want 2, the first of some-other-name.gz", name, res.BadLines, res.FirstBad)
		}
	}
	// Without the prefix, nothing of the prefixed archive is found.
	a, _ := logquery.NewArchive(store, logquery.ArchiveConfig{})
	if _, got, err := query(t, a, logquery.Filter{Since: t0}); err != nil || len(got) != 0 {
		t.Errorf("without the prefix: %v, %v", got, err)
	}
}

// With a limit the archive is read newest hour first, and the hours older than the limit's events
// are not read at all.
func TestArchiveLimitReadsTheNewestHoursOnly(t *testing.T) {
	var events []*event.Event
	for h := range 5 {
		for i := range 3 {
			e := event.New(event.LevelInfo, event.KindApp, time.Duration(h).String()+"/"+time.Duration(i).String())
			e.TS = t0.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Minute)
			events = append(events, e)
		}
	}
	a, _ := logquery.NewArchive(archiveOf(t, events, ""), logquery.ArchiveConfig{})
	res, got, err := query(t, a, logquery.Filter{Since: t0, Until: t0.Add(5 * time.Hour), Limit: 4})
	if err != nil || strings.Join(got, " ") != "3ns/2ns 4ns/0s 4ns/1ns 4ns/2ns" || !res.More {
		t.Errorf("limit 4: %v (more %v), %v", got, res.More, err)
	}
	if res.Blobs != 2 {
		t.Errorf("limit 4 read %d blobs, want the two newest hours'", res.Blobs)
	}
	res, got, err = query(t, a, logquery.Filter{Since: t0, Until: t0.Add(5 * time.Hour)})
	if err != nil || len(got) != 15 || res.Blobs != 5 || res.Lines != 15 {
		t.Errorf("no limit: %d events of %d blobs, %d lines, %v", len(got), res.Blobs, res.Lines, err)
	}
}

// What the archive would have to hold to put matches in order is bounded: past the bound the query
// fails and says which hour and what to do.
func TestArchiveBoundsWhatItHolds(t *testing.T) {
	_, events := fixture()
	a, _ := logquery.NewArchive(archiveOf(t, events, ""), logquery.ArchiveConfig{MaxHeldBytes: 300})
	_, _, err := query(t, a, logquery.Filter{Since: t0})
	if err == nil || !strings.Contains(err.Error(), "hour 2026-11-30T10Z") || !strings.Contains(err.Error(), "narrow the filter or set a limit") {
		t.Errorf("over the bound: %v", err)
	}
	if _, _, err := query(t, a, logquery.Filter{}); !errors.Is(err, logquery.ErrNoRange) {
		t.Errorf("no since: %v, want ErrNoRange", err)
	}
}
