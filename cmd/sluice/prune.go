package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/subscribers"
)

// flagPrune declares the flags of sluice prune on fs (none for another command); prune reads them
// back from fs.
func flagPrune(fs *flag.FlagSet, cmd string) {
	if cmd != "prune" {
		return
	}
	fs.Bool("dry-run", false, "print what would be removed, and remove nothing")
	fs.Duration("older-than", 0, "remove what is older than this `duration` (e.g. 720h) instead of each store's "+
		"retention (postgres.retention, blob.retention), also from a store whose retention is 0")
	fs.String("sink", "", "prune only this store: `postgres` or blob (default: every store the routes write)")
}

// prune removes from PostgreSQL and the archive what is older than their retention (sluice.Prune, the
// code the running pipeline uses every hour) and prints each partition and hour prefix it removed, or
// would remove with -dry-run.
func prune(ctx context.Context, file string, fs *flag.FlagSet, stdout io.Writer, log *slog.Logger) error {
	opts := sluice.PruneOptions{
		DryRun:    fs.Lookup("dry-run").Value.(flag.Getter).Get().(bool),
		OlderThan: fs.Lookup("older-than").Value.(flag.Getter).Get().(time.Duration),
	}
	if opts.OlderThan < 0 {
		return &configError{fmt.Errorf("-older-than %s: must be positive", opts.OlderThan)}
	}
	switch s := fs.Lookup("sink").Value.String(); s {
	case "":
	case "postgres", "blob":
		opts.Sinks = []string{s}
	default:
		return &configError{fmt.Errorf("-sink %q: want postgres or blob", s)}
	}
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	opts.Now = time.Now()
	reports, err := sluice.Prune(ctx, cfg, opts, log)
	for _, r := range reports {
		printPruneReport(stdout, r, opts.Now)
	}
	if len(reports) == 0 && err == nil {
		fmt.Fprintln(stdout, "nothing to prune: every store keeps its events forever (retention 0); -older-than prunes all the same")
	}
	if errors.Is(err, sluice.ErrPruneLocked) {
		return fmt.Errorf("%w; try again later", err)
	}
	return err
}

// printPruneReport prints one store's prune: a line per unit removed, then the totals.
func printPruneReport(w io.Writer, r subscribers.PruneReport, now time.Time) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "%s: cutoff %s (older than %s)\n", r.Sink, r.Cutoff.UTC().Format(time.RFC3339), now.Sub(r.Cutoff).Round(time.Second))
	for _, u := range r.Removed {
		from := "the beginning"
		if !u.From.IsZero() {
			from = u.From.UTC().Format("2006-01-02T15:04Z")
		}
		fmt.Fprintf(w, "  %s %s  [%s, %s)", verb, u.Name, from, u.To.UTC().Format("2006-01-02T15:04Z"))
		if u.Events >= 0 {
			fmt.Fprintf(w, "  %d events", u.Events)
		}
		if u.Objects == 1 {
			fmt.Fprint(w, "  1 object")
		} else if u.Objects > 1 {
			fmt.Fprintf(w, "  %d objects", u.Objects)
		}
		if u.Bytes >= 0 {
			fmt.Fprintf(w, "  %s", bytesText(u.Bytes))
		}
		fmt.Fprintln(w)
	}
	n, exact := r.Events()
	events := fmt.Sprintf("%d events", n)
	if !exact {
		events = "events not counted"
		if n > 0 {
			events = fmt.Sprintf("%d events counted", n)
		}
	}
	oldest := "nothing kept"
	if !r.Oldest.IsZero() {
		oldest = "oldest kept " + r.Oldest.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "  %s %d units, %s, %s; %s\n", verb, len(r.Removed), events, bytesText(r.Bytes()), oldest)
}

// bytesText is a size for people: 512 B, 3.4 kB, 12.0 MB.
func bytesText(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f GB", float64(n)/1e9)
}
