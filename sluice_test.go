package sluice_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

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
