package sluice_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/sluicelog/sluice/subscribers/blobsink/azurestore" // the test opens an Azure store

	"github.com/sluicelog/sluice"
	"github.com/sluicelog/sluice/event"
)

// A storage account that does not answer at start does not stop the service: the pipeline starts,
// says so, accepts events, and would write them when the account answers.
func TestNewStartsWhenAzureIsUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	cfg := sluice.DefaultConfig()
	cfg.Postgres.Enabled = false
	cfg.Routes = []sluice.Route{{Name: "archive", Sink: "blob"}}
	cfg.Blob.ConnectionString = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
		"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
		"BlobEndpoint=http://" + dead + "/devstoreaccount1;"
	var logs bytes.Buffer
	p, err := sluice.New(context.Background(), cfg, sluice.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatalf("New with an unreachable storage account: %v", err)
	}
	if !strings.Contains(logs.String(), "Azure Blob Storage is not reachable") {
		t.Errorf("no warning logged:\n%s", logs.String())
	}
	if err := p.Publish(context.Background(), event.New(event.LevelInfo, event.KindApp, "kept in the bus")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var undelivered *sluice.UndeliveredError
	if err := p.Close(ctx); err == nil || !errors.As(err, &undelivered) || undelivered.Events != 1 {
		t.Fatalf("Close = %v, want an UndeliveredError for the 1 event", err)
	}
}

// A local archive directory with the temporary file of a write interrupted by a crash: the pipeline
// removes it as it opens the directory, and logs which file it removed.
func TestNewRemovesTheLeftoversOfInterruptedBlobWrites(t *testing.T) {
	cfg := sluice.DefaultConfig()
	cfg.Postgres.Enabled = false
	cfg.Routes = []sluice.Route{{Name: "archive", Sink: "blob"}}
	cfg.Blob.Dir = t.TempDir()
	leftover := filepath.Join(cfg.Blob.Dir, cfg.Blob.Container, "2025", "01", "02", "15", ".tmp-4242")
	if err := os.MkdirAll(filepath.Dir(leftover), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(leftover, []byte("half a blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	p, err := sluice.New(context.Background(), cfg, sluice.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the leftover is still there (%v)", err)
	}
	if !strings.Contains(logs.String(), "removed the temporary files") || !strings.Contains(logs.String(), "2025/01/02/15/.tmp-4242") {
		t.Fatalf("the removal is not logged with the file's name:\n%s", logs.String())
	}
}
