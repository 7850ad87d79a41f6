package pgsink

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicelog/sluice/subscribers"
)

// pruneLockKey is the advisory lock that one process at a time holds while it prunes ("sluicr").
const pruneLockKey int64 = 0x736c75696372

// Prune removes what is older than cutoff (subscribers.Pruner): every partition of the table whose
// whole range ends at or before cutoff is detached (ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY,
// which waits for the queries that use it instead of blocking the table) and dropped; the day that
// holds cutoff is kept whole. Nothing is DELETEd from the table, so nothing is left to vacuum. The
// dead-letter table, small, is pruned by failed_at (DELETE ... WHERE failed_at < cutoff). With dryRun
// it removes nothing and reports the same list. A detach that was interrupted is finished (FINALIZE).
//
// The table must be partitioned (migration 0003). Each removed partition is reported with its rows
// (counted before it is dropped) and its size on disk; Oldest is the time of the oldest event kept.
func (s *Sink) Prune(ctx context.Context, cutoff time.Time, dryRun bool) (subscribers.PruneReport, error) {
	rep := subscribers.PruneReport{Sink: SinkType, Cutoff: cutoff, DryRun: dryRun}
	partitioned, ranges, err := listPartitions(ctx, s.pool, s.table)
	if err != nil {
		return rep, err
	}
	if !partitioned {
		return rep, fmt.Errorf("pgsink: prune: %s is not partitioned (migration 0003 is not applied: run sluice migrate)",
			s.cfg.Table)
	}
	var keepFrom time.Time // the oldest event kept is at or after it
	parent := s.table.Sanitize()
	for _, r := range ranges {
		if r.to.After(cutoff) {
			break // in time order: every later one is kept too
		}
		u := subscribers.PrunedUnit{Name: r.name, From: r.from, To: r.to}
		if err := s.pool.QueryRow(ctx, "SELECT count(*), pg_total_relation_size($1::regclass) FROM "+r.qname, r.qname).
			Scan(&u.Events, &u.Bytes); err != nil {
			return rep, fmt.Errorf("pgsink: prune: size of %s: %w", r.name, err)
		}
		if !dryRun {
			detach := " CONCURRENTLY"
			if r.pending {
				detach = " FINALIZE"
			}
			if _, err := s.pool.Exec(ctx, "ALTER TABLE "+parent+" DETACH PARTITION "+r.qname+detach); err != nil {
				return rep, fmt.Errorf("pgsink: prune: detach %s: %w", r.name, err)
			}
			if _, err := s.pool.Exec(ctx, "DROP TABLE "+r.qname); err != nil {
				return rep, fmt.Errorf("pgsink: prune: drop %s (detached): %w", r.name, err)
			}
		}
		rep.Removed = append(rep.Removed, u)
		keepFrom = r.to
	}
	if len(rep.Removed) > 0 && !dryRun {
		s.parts.Forget()
	}
	letters, err := s.pruneDeadLetters(ctx, cutoff, dryRun)
	if err != nil {
		return rep, err
	}
	if letters.Events > 0 {
		rep.Removed = append(rep.Removed, letters)
	}
	var oldest *time.Time
	q := "SELECT min(ts) FROM " + parent
	args := []any{}
	if !keepFrom.IsZero() {
		q += " WHERE ts >= $1"
		args = append(args, keepFrom)
	}
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&oldest); err != nil {
		return rep, fmt.Errorf("pgsink: prune: oldest event kept: %w", err)
	}
	if oldest != nil {
		rep.Oldest = oldest.UTC()
	}
	return rep, nil
}

// pruneDeadLetters deletes (or, with dryRun, counts) the dead letters that failed before cutoff: the
// table is small and indexed by failed_at.
func (s *Sink) pruneDeadLetters(ctx context.Context, cutoff time.Time, dryRun bool) (subscribers.PrunedUnit, error) {
	table := pgx.Identifier(strings.Split(s.cfg.DeadLetterTable, ".")).Sanitize()
	u := subscribers.PrunedUnit{Name: s.cfg.DeadLetterTable + " (rows failed before the cutoff)", To: cutoff, Bytes: -1}
	var err error
	if dryRun {
		err = s.pool.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE failed_at < $1", cutoff).Scan(&u.Events)
	} else {
		var tag interface{ RowsAffected() int64 }
		tag, err = s.pool.Exec(ctx, "DELETE FROM "+table+" WHERE failed_at < $1", cutoff)
		if err == nil {
			u.Events = tag.RowsAffected()
		}
	}
	if err != nil {
		return u, fmt.Errorf("pgsink: prune %s: %w", s.cfg.DeadLetterTable, err)
	}
	return u, nil
}

// TryPruneLock takes the advisory lock that one process at a time holds while it prunes
// (subscribers.PruneLocker), on a connection of its own, unless another session holds it.
func (s *Sink) TryPruneLock(ctx context.Context) (unlock func(), ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("pgsink: prune lock: %w", err)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", pruneLockKey).Scan(&ok); err != nil || !ok {
		conn.Release()
		if err != nil {
			return nil, false, fmt.Errorf("pgsink: prune lock: %w", err)
		}
		return nil, false, nil
	}
	return func() {
		advisoryUnlock(ctx, conn.Conn(), pruneLockKey)
		conn.Release()
	}, true, nil
}
