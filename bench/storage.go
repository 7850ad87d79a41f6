package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicelog/sluice/subscribers/pgsink"
)

// uniqueName returns prefix followed by 12 random hex digits: a database or container of its own.
func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// freshDatabase creates an empty database on the server of adminDSN and returns its DSN and a function
// that drops it.
func freshDatabase(ctx context.Context, adminDSN string) (dsn string, drop func(), err error) {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", nil, fmt.Errorf("PostgreSQL at %s: %w", adminDSN, err)
	}
	defer conn.Close(ctx)
	name := uniqueName("sluice_bench_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(adminDSN)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, adminDSN); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	}
	return u.String(), drop, nil
}

// openPool connects a pool of at most maxConns to dsn, optionally applying sluice's migrations.
func openPool(ctx context.Context, dsn string, maxConns int32, migrate bool) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if migrate {
		if _, err := pgsink.Migrate(ctx, pool); err != nil {
			pool.Close()
			return nil, err
		}
		// application_logs is partitioned by day: the generated events' day has its partition before
		// anything is measured (the sink would make it on its first write; the baselines cannot).
		d := eventsStart.Truncate(24 * time.Hour)
		if _, err := pool.Exec(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS application_logs_p%s PARTITION OF application_logs "+
			"FOR VALUES FROM ('%s') TO ('%s')", d.Format("20060102"), d.Format(time.RFC3339), d.AddDate(0, 0, 1).Format(time.RFC3339))); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return pool, nil
}

// tableStats returns a table's rows and its size with indexes and TOAST (of all its partitions).
func tableStats(ctx context.Context, pool *pgxpool.Pool, table string) (rows int, bytes int64, err error) {
	err = pool.QueryRow(ctx, "SELECT count(*), coalesce((SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree($1::regclass)), "+
		"pg_total_relation_size($1::regclass)) FROM "+
		pgx.Identifier{table}.Sanitize(), table).Scan(&rows, &bytes)
	return rows, bytes, err
}

// deleteContainer removes a container and its blobs, best effort.
func deleteContainer(connectionString, container string) {
	client, err := azblob.NewClientFromConnectionString(connectionString, nil)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = client.DeleteContainer(ctx, container, nil)
}

// metrics is a Prometheus text exposition: every sample by its series ("name{labels}") and, summed over
// labels, by its name.
type metrics struct {
	series map[string]float64
	byName map[string]float64
}

func parseMetrics(r io.Reader) (metrics, error) {
	m := metrics{series: map[string]float64{}, byName: map[string]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return m, fmt.Errorf("metrics: %q: %w", line, err)
		}
		series := line[:i]
		name, _, _ := strings.Cut(series, "{")
		m.series[series] += v
		m.byName[name] += v
	}
	return m, sc.Err()
}

// byLabel returns the samples of name by the value of one label.
func (m metrics) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for s, v := range m.series {
		n, labels, ok := strings.Cut(s, "{")
		if !ok || n != name {
			continue
		}
		for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			if k, val, ok := strings.Cut(kv, "="); ok && k == label {
				out[strings.Trim(val, `"`)] += v
			}
		}
	}
	return out
}
