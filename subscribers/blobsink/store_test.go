package blobsink_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

// stores lists a fresh, empty store of each kind: a DirStore in a temporary directory and an AzureStore
// in a new container of the Azurite that .ci/run (or scripts/azurite.sh) started.
var stores = []struct {
	name string
	open func(t testing.TB) blobsink.Store
}{
	{"dir", openDir},
	{"azure", func(t testing.TB) blobsink.Store { return openAzure(t) }},
}

func openDir(t testing.TB) blobsink.Store {
	s, err := blobsink.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openAzure(t testing.TB) *azurestore.Store {
	t.Helper()
	cs := testenv.Azurite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := testenv.Container(t)
	s, err := azurestore.Open(ctx, azurestore.Config{ConnectionString: cs, Container: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		// Azurite keeps blobs in memory: give them back.
		c, err := azblob.NewClientFromConnectionString(cs, nil)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err = c.DeleteContainer(ctx, name, nil)
		}
		if err != nil {
			t.Logf("delete container %s: %v", name, err)
		}
	})
	return s
}

func forEachStore(t *testing.T, test func(t *testing.T, store blobsink.Store)) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			test(t, s.open(t))
		})
	}
}

func newSink(t testing.TB, store blobsink.Store, cfg blobsink.Config) *blobsink.Sink {
	t.Helper()
	s, err := blobsink.New(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func list(t testing.TB, store blobsink.Store, prefix string) []string {
	t.Helper()
	names, err := store.List(ctxT(t), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// gunzipped returns the content of one stored blob, which must be gzip, decompressed.
func gunzipped(t testing.TB, store blobsink.Store, name string) []byte {
	t.Helper()
	data, err := store.Get(ctxT(t), name)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("stored blob %s is not gzip: %v", name, err)
	}
	content, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return content
}

// readBlob returns the events of one stored blob.
func readBlob(t testing.TB, store blobsink.Store, name string) []*event.Event {
	t.Helper()
	data, err := store.Get(ctxT(t), name)
	if err != nil {
		t.Fatal(err)
	}
	events, err := blobsink.Decode(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return events
}

func ids(events []*event.Event) []uuid.UUID {
	out := make([]uuid.UUID, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func hourName(prefix string, ts time.Time, events []*event.Event) string {
	name := ts.UTC().Format("2006/01/02/15/") + event.BatchID(events).String() + ".ndjson.gz"
	if prefix != "" {
		name = prefix + "/" + name
	}
	return name
}

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func TestBlobName(t *testing.T) {
	events := sinktest.Events(3, t0)
	id := event.BatchID(events).String()
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		prefix string
		ts     time.Time
		want   string
	}{
		{"", t0, "2025/03/04/05/" + id + ".ndjson.gz"},
		{"audit", t0, "audit/2025/03/04/05/" + id + ".ndjson.gz"},
		{"a/b", t0, "a/b/2025/03/04/05/" + id + ".ndjson.gz"},
		// The hour is UTC's, whatever the time's location.
		{"", time.Date(2025, 3, 4, 0, 30, 0, 0, paris), "2025/03/03/23/" + id + ".ndjson.gz"},
		{"", time.Date(2025, 12, 31, 23, 59, 59, 999999999, time.UTC), "2025/12/31/23/" + id + ".ndjson.gz"},
	} {
		events[0].TS = tc.ts
		if got := blobsink.BlobName(tc.prefix, events); got != tc.want {
			t.Errorf("BlobName(%q, ts %s) = %q, want %q", tc.prefix, tc.ts, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  blobsink.Config
		want string // part of the error; "" for valid
	}{
		{blobsink.Config{}, ""},
		{blobsink.DefaultConfig(), ""},
		{blobsink.Config{Prefix: "audit/eu"}, ""},
		{blobsink.Config{Prefix: "/audit"}, "`prefix` (\"/audit\")"},
		{blobsink.Config{Prefix: "audit/"}, "`prefix`"},
		{blobsink.Config{Prefix: "a//b"}, "`prefix`"},
		{blobsink.Config{Prefix: "a/../b"}, "`prefix`"},
		{blobsink.Config{Prefix: `a\b`}, "`prefix`"},
		{blobsink.Config{Prefix: "dead-letter"}, "must not start with \"dead-letter/\""},
		{blobsink.Config{Prefix: "dead-letter/x"}, "must not start with"},
		{blobsink.Config{Prefix: "x/dead-letter"}, ""},
		{blobsink.Config{Prefix: strings.Repeat("n", 255)}, ""},
		{blobsink.Config{Prefix: strings.Repeat("n", 256)}, "longer than 255 bytes"},
		{blobsink.Config{Prefix: strings.Repeat("n/", 450) + "n"}, "longer than 900 bytes"},
		{blobsink.Config{WriteTimeout: -time.Second}, "`write_timeout` (-1s)"},
		{blobsink.Config{Concurrency: -1}, "`concurrency` (-1)"},
	} {
		checkValidate(t, tc.cfg, tc.cfg.Validate(), tc.want)
	}
	if _, err := blobsink.New(openDir(t), blobsink.Config{Concurrency: -2}); err == nil ||
		!strings.Contains(err.Error(), "invalid config: `concurrency` (-2)") {
		t.Errorf("New with a bad config: %v", err)
	}
	if got := blobsink.DefaultConfig(); got.WriteTimeout != 30*time.Second || got.Concurrency < 1 {
		t.Errorf("DefaultConfig() = %+v", got)
	}
}

// checkValidate checks the error of cfg.Validate(): nil when want is "", else one containing want.
func checkValidate(t *testing.T, cfg any, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%+v: unexpected error %v", cfg, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%+v: error %v, want one containing %s", cfg, err, want)
	}
}

func TestAzureConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  azurestore.Config
		want string
	}{
		{azurestore.Config{ConnectionString: "x"}, ""},
		{azurestore.Config{}, "`connection_string` is required"},
		{azurestore.Config{ConnectionString: "x", Container: "Logs"}, "`container` (\"Logs\")"},
		{azurestore.Config{ConnectionString: "x", Container: "lo"}, "`container`"},
		{azurestore.Config{ConnectionString: "x", Container: "a--b"}, "`container`"},
		{azurestore.Config{ConnectionString: "x", TryTimeout: -1}, "`try_timeout`"},
		{azurestore.Config{ConnectionString: "x", MaxConnsPerHost: -1}, "`max_conns_per_host` (-1)"},
	} {
		checkValidate(t, tc.cfg, tc.cfg.Validate(), tc.want)
	}
}

// One batch within one hour is one blob, named by the hour and the batch id, holding the events'
// JSON (Raw, when the events have it) one per line, in order.
func TestWriteOneHour(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		events := sinktest.Events(50, t0)
		for _, e := range events[:10] { // as if they came off the bus: Raw is stored as it is
			raw, err := e.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			e.Raw = append(raw[:len(raw)-1:len(raw)-1], `,"from_raw":true}`...)
		}
		sink := newSink(t, store, blobsink.Config{})
		if got := sink.Name(); got != "blob" {
			t.Errorf("Name() = %q", got)
		}
		if err := sink.Write(ctxT(t), subscribers.NewBatch(events)); err != nil {
			t.Fatal(err)
		}
		want := hourName("", t0, events)
		if got := list(t, store, ""); !slices.Equal(got, []string{want}) {
			t.Fatalf("blobs = %q, want %q", got, want)
		}
		ndjson := gunzipped(t, store, want)
		wantNDJSON, err := event.Encode(events...)
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(ndjson, []byte(`"from_raw":true`)); n != 10 {
			t.Errorf("%d events stored from Raw, want 10", n)
		}
		if !bytes.Equal(ndjson, wantNDJSON) {
			t.Errorf("blob content differs from the events' NDJSON:\n got %.300s\nwant %.300s", ndjson, wantNDJSON)
		}
		got := readBlob(t, store, want)
		if !slices.Equal(ids(got), ids(events)) {
			t.Errorf("blob holds events %v, want %v", ids(got), ids(events))
		}
	})
}

// A batch spanning an hour boundary gives one blob per hour, each holding its hour's events in order.
func TestWriteSplitsByHour(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		h5 := sinktest.Events(6, time.Date(2025, 3, 4, 5, 59, 59, 0, time.UTC))
		h6 := sinktest.Events(4, time.Date(2025, 3, 4, 6, 0, 0, 0, time.UTC))
		h7 := sinktest.Events(1, time.Date(2025, 3, 4, 7, 0, 0, 0, time.FixedZone("X", -3600)))
		// Interleaved: the split keeps each hour's order.
		batch := []*event.Event{h5[0], h6[0], h5[1], h7[0], h5[2], h6[1], h6[2], h5[3], h5[4], h5[5], h6[3]}
		sink := newSink(t, store, blobsink.Config{Prefix: "p", Concurrency: 2})
		if err := sink.Write(ctxT(t), subscribers.NewBatch(batch)); err != nil {
			t.Fatal(err)
		}
		want := []string{
			hourName("p", h5[0].TS, h5),
			hourName("p", h6[0].TS, h6),
			hourName("p", h7[0].TS, h7),
		}
		if !strings.HasPrefix(want[2], "p/2025/03/04/08/") {
			t.Fatalf("test bug: h7 is %s", want[2])
		}
		slices.Sort(want)
		got := list(t, store, "")
		if !slices.Equal(got, want) {
			t.Fatalf("blobs = %q\nwant %q", got, want)
		}
		for _, part := range [][]*event.Event{h5, h6, h7} {
			if got := readBlob(t, store, hourName("p", part[0].TS, part)); !slices.Equal(ids(got), ids(part)) {
				t.Errorf("blob of %s holds %v, want %v", part[0].TS, ids(got), ids(part))
			}
		}
		if got := list(t, store, "p/2025/03/04/06/"); !slices.Equal(got, want[1:2]) {
			t.Errorf("List(hour 06) = %q, want %q", got, want[1:2])
		}
		if got := list(t, store, "q/"); len(got) != 0 {
			t.Errorf("List(q/) = %q, want none", got)
		}
	})
}

// A replayed batch maps to the same names and stores nothing new; Put never replaces an object.
func TestReplayStoresNoSecondCopy(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		ctx := ctxT(t)
		batch := append(sinktest.Events(20, t0.Add(53*time.Minute)), sinktest.Events(20, t0.Add(55*time.Minute))...) // 05:59, 06:01
		sink := newSink(t, store, blobsink.Config{})
		for range 3 {
			if err := sink.Write(ctx, subscribers.NewBatch(batch)); err != nil {
				t.Fatal(err)
			}
		}
		names := list(t, store, "")
		if len(names) != 2 {
			t.Fatalf("after 3 writes of one batch spanning 2 hours: blobs %q, want 2", names)
		}
		before, err := store.Get(ctx, names[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Put(ctx, names[0], []byte("other content"), "text/plain", ""); err != nil {
			t.Fatalf("Put of an existing name = %v, want nil (already written)", err)
		}
		after, err := store.Get(ctx, names[0])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Errorf("Put replaced an existing object")
		}
		if got := list(t, store, ""); !slices.Equal(got, names) {
			t.Errorf("blobs after replays = %q, want %q", got, names)
		}
	})
}

func TestGetMissing(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		if _, err := store.Get(ctxT(t), "2025/01/01/00/none.ndjson.gz"); !errors.Is(err, blobsink.ErrNotFound) {
			t.Errorf("Get of a missing name = %v, want ErrNotFound", err)
		}
	})
}

func TestWriteAfterCloseAndCancel(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		sink := newSink(t, store, blobsink.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		batch := subscribers.NewBatch(sinktest.Events(3, t0))
		if err := sink.Write(ctx, batch); err == nil {
			t.Error("Write with a cancelled context = nil, want an error")
		}
		if err := sink.Write(ctxT(t), subscribers.Batch{}); err != nil {
			t.Errorf("Write of an empty batch = %v", err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sink.Write(ctxT(t), batch); !errors.Is(err, blobsink.ErrClosed) {
			t.Errorf("Write after Close = %v, want ErrClosed", err)
		}
	})
}

// A store that fails one name: Write fails when any part fails, and the other parts are stored.
type failingStore struct {
	blobsink.Store
	fail string
}

func (s failingStore) Put(ctx context.Context, name string, data []byte, ct, ce string) error {
	if strings.Contains(name, s.fail) {
		return errors.New("injected failure")
	}
	return s.Store.Put(ctx, name, data, ct, ce)
}

func TestWriteFailsWhenAPartFails(t *testing.T) {
	store := openDir(t)
	sink := newSink(t, failingStore{store, "/06/"}, blobsink.Config{})
	batch := append(sinktest.Events(2, t0), sinktest.Events(2, t0.Add(time.Hour))...)
	err := sink.Write(ctxT(t), subscribers.NewBatch(batch))
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("Write = %v, want the injected failure", err)
	}
	if got := list(t, store, ""); len(got) != 1 || !strings.Contains(got[0], "/05/") {
		t.Errorf("blobs = %q, want the hour-05 one", got)
	}
}

// The blob keeps Content-Type and Content-Encoding; a plain HTTP client (which asks for gzip and
// decompresses) gets the NDJSON, and Decode reads that as well as the stored gzip bytes.
func TestAzureBlobProperties(t *testing.T) {
	store := openAzure(t)
	ctx := ctxT(t)
	events := sinktest.Events(10, t0)
	if err := newSink(t, store, blobsink.Config{}).Write(ctx, subscribers.NewBatch(events)); err != nil {
		t.Fatal(err)
	}
	name := hourName("", t0, events)
	c, err := azblob.NewClientFromConnectionString(testenv.Azurite(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	bc := c.ServiceClient().NewContainerClient(store.Container()).NewBlobClient(name)
	props, err := bc.GetProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if props.ContentType == nil || *props.ContentType != "application/x-ndjson" ||
		props.ContentEncoding == nil || *props.ContentEncoding != "gzip" {
		t.Errorf("Content-Type %v, Content-Encoding %v", deref(props.ContentType), deref(props.ContentEncoding))
	}
	// The SDK's default transport decompresses on the way, as any Go HTTP client does.
	resp, err := c.DownloadStream(ctx, store.Container(), name, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := event.Encode(events...)
	if !bytes.Equal(plain, want) {
		t.Errorf("default-transport download is not the NDJSON (len %d, want %d): %.80q", len(plain), len(want), plain)
	}
	got, err := blobsink.Decode(plain)
	if err != nil || !slices.Equal(ids(got), ids(events)) {
		t.Errorf("Decode of decompressed download: %v, ids equal %v", err, slices.Equal(ids(got), ids(events)))
	}
	// The store's Get hands back the stored gzip bytes.
	stored, err := store.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) < 2 || stored[0] != 0x1f || stored[1] != 0x8b {
		t.Errorf("Get returned no gzip: %.40q", stored)
	}
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// Concurrent writers of one name: every Put says nil, one complete file stays, no temporary file is left.
func TestDirStoreConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	store, err := blobsink.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	const name = "2025/03/04/05/x.ndjson.gz"
	const writers = 16
	contents := make([][]byte, writers)
	var wg sync.WaitGroup
	for i := range writers {
		contents[i] = bytes.Repeat([]byte{byte('a' + i)}, 256<<10)
		wg.Go(func() {
			if err := store.Put(context.Background(), name, contents[i], "", ""); err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(contents, func(c []byte) bool { return bytes.Equal(c, got) }) {
		t.Errorf("the stored file (%d bytes) is none of the written contents whole", len(got))
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Errorf("files in the store: %q, want only %s (no temporary files)", files, name)
	}
}

func TestDirStoreRejectsNamesOutside(t *testing.T) {
	store := openDir(t)
	for _, name := range []string{"../x", "/abs", "a/../../x", "", ".", `a\..\x`} {
		if err := store.Put(context.Background(), name, []byte("x"), "", ""); err == nil {
			t.Errorf("Put(%q) = nil, want an error", name)
		}
	}
}

// A Put interrupted by a crash leaves its temporary file behind; opening the store again removes
// every such file, wherever it is, says which, and leaves the objects alone.
func TestDirStoreRemovesTheTemporaryFilesOfInterruptedWrites(t *testing.T) {
	dir := t.TempDir()
	store, err := blobsink.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(context.Background(), "2025/01/02/15/kept.ndjson.gz", []byte("kept"), "", ""); err != nil {
		t.Fatal(err)
	}
	leftovers := []string{"2025/01/02/15/.tmp-123", "2025/01/02/16/.tmp-456", ".tmp-789"}
	for _, name := range leftovers {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half a blob"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := store.Removed(); len(r) != 0 {
		t.Fatalf("a fresh directory: Removed = %v, want none", r)
	}

	reopened, err := blobsink.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".tmp-789", "2025/01/02/15/.tmp-123", "2025/01/02/16/.tmp-456"}
	if got := reopened.Removed(); !slices.Equal(got, want) {
		t.Fatalf("Removed = %v, want %v", got, want)
	}
	for _, name := range leftovers {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", name, err)
		}
	}
	if got, err := reopened.Get(context.Background(), "2025/01/02/15/kept.ndjson.gz"); err != nil || string(got) != "kept" {
		t.Fatalf("the stored object: %q, %v", got, err)
	}
}
