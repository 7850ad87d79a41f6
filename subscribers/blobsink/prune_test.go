package blobsink_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// Prune deletes exactly the hour prefixes that end at or before the cutoff, wherever they are (at the
// top, below a route's prefix, below dead-letter/), and nothing that is not in the date layout; a dry
// run reports the same units and deletes nothing. In a local directory and in Azure (Azurite).
func TestPruneRemovesWholeHours(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		ctx := ctxT(t)
		ps := store.(blobsink.PruneStore)
		start := time.Date(2026, 3, 30, 22, 0, 0, 0, time.UTC) // across a month's end
		var events []*event.Event
		for h := 0; h < 6; h++ {
			events = append(events, sinktest.Events(3, start.Add(time.Duration(h)*time.Hour+10*time.Minute))...)
		}
		for _, prefix := range []string{"", "v1/api"} {
			if err := newSink(t, store, blobsink.Config{Prefix: prefix}).Write(ctx, subscribers.NewBatch(events)); err != nil {
				t.Fatal(err)
			}
		}
		letter := subscribers.DeadLetter{ID: events[0].ID, Route: "r", Reason: subscribers.ReasonInvalidData, Raw: []byte("{}"),
			FailedAt: start.Add(30 * time.Minute)}
		if err := newSink(t, store, blobsink.Config{}).WriteDeadLetters(ctx, []subscribers.DeadLetter{letter}); err != nil {
			t.Fatal(err)
		}
		for _, other := range []string{"notes/readme.txt", "2026/xx/keep.txt"} {
			if err := store.Put(ctx, other, []byte("x"), "text/plain", ""); err != nil {
				t.Fatal(err)
			}
		}
		all := list(t, store, "")
		cutoff := start.Add(3*time.Hour + 5*time.Minute) // hours 22, 23, 00 end before it; 01 holds it
		oldHour := func(name string) bool {
			for _, h := range []string{"2026/03/30/22/", "2026/03/30/23/", "2026/03/31/00/"} {
				if strings.Contains(name, h) {
					return true
				}
			}
			return false
		}
		dry, dryOldest, err := blobsink.Prune(ctx, ps, "c/", cutoff, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := list(t, store, ""); !slices.Equal(got, all) {
			t.Errorf("the dry run deleted: %v, want %v", got, all)
		}
		removed, oldest, err := blobsink.Prune(ctx, ps, "c/", cutoff, false)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, n := range all {
			if !oldHour(n) {
				want = append(want, n)
			}
		}
		if got := list(t, store, ""); !slices.Equal(got, want) {
			t.Errorf("after the prune %v, want %v", got, want)
		}
		units := func(us []subscribers.PrunedUnit) (out []string) {
			for _, u := range us {
				out = append(out, u.Name)
			}
			return out
		}
		wantUnits := []string{"c/2026/03/30/22/", "c/2026/03/30/23/", "c/2026/03/31/00/",
			"c/dead-letter/2026/03/30/22/",
			"c/v1/api/2026/03/30/22/", "c/v1/api/2026/03/30/23/", "c/v1/api/2026/03/31/00/"}
		if !slices.Equal(units(removed), wantUnits) || !slices.Equal(units(dry), wantUnits) {
			t.Errorf("removed %v, dry run %v; want %v", units(removed), units(dry), wantUnits)
		}
		for _, u := range removed {
			if u.Objects == 0 || u.Bytes <= 0 || u.Events != -1 || !u.To.Equal(u.From.Add(time.Hour)) {
				t.Errorf("unit %+v: want objects, bytes, unknown events and an hour", u)
			}
		}
		if wantOldest := start.Add(3 * time.Hour); !oldest.Equal(wantOldest) || !dryOldest.Equal(wantOldest) {
			t.Errorf("oldest kept %s (dry run %s), want %s", oldest, dryOldest, wantOldest)
		}
		again, _, err := blobsink.Prune(ctx, ps, "c/", cutoff, false)
		if err != nil || len(again) != 0 {
			t.Errorf("a second prune removed %v (%v)", units(again), err)
		}
	})
}

// The directory store leaves no empty directories behind a pruned hour.
func TestPruneLeavesNoEmptyDirectories(t *testing.T) {
	dir := t.TempDir()
	store, err := blobsink.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	at := time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC)
	if err := newSink(t, store, blobsink.Config{}).Write(ctx, subscribers.NewBatch(sinktest.Events(2, at))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := blobsink.Prune(ctx, store, "", at.Add(2*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if dirs, err := store.Dirs(ctx, ""); err != nil || len(dirs) != 0 {
		t.Errorf("left %v (%v), want nothing", dirs, err)
	}
}
