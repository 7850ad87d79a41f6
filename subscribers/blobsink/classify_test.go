package blobsink_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/sluicelog/sluice/event"
	"github.com/sluicelog/sluice/internal/testenv"
	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
	"github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
	"github.com/sluicelog/sluice/subscribers/sinktest"
)

func azErr(status int, code string) error {
	return fmt.Errorf("blobsink: upload logs/x: %w", &azcore.ResponseError{StatusCode: status, ErrorCode: code})
}

func pathErr(errno syscall.Errno) error {
	return fmt.Errorf("blobsink: %w", &fs.PathError{Op: "open", Path: "/x", Err: errno})
}

// classify is how a blob sink's errors are classified: the store's own (azurestore.Classify, which Put
// applies to Azure's answers), then blobsink.Classify's.
func classify(err error) error { return blobsink.Classify(azurestore.Classify(err)) }

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name      string
		err       error
		permanent bool
	}{
		// The body was refused: smaller or other data can succeed.
		{"413", azErr(http.StatusRequestEntityTooLarge, ""), true},
		{"RequestBodyTooLarge", azErr(413, "RequestBodyTooLarge"), true},
		{"InvalidInput", azErr(400, "InvalidInput"), true},
		{"InvalidBlobOrBlock", azErr(400, "InvalidBlobOrBlock"), true},
		{"OutOfRangeInput", azErr(400, "OutOfRangeInput"), true},
		{"Md5Mismatch", azErr(400, "Md5Mismatch"), true},
		{"Crc64Mismatch", azErr(400, "Crc64Mismatch"), true},
		{"InvalidMd5", azErr(400, "InvalidMd5"), true},
		{"EFBIG", pathErr(syscall.EFBIG), true},
		{"already permanent", subscribers.Permanent(errors.New("x")), true},
		// The service's or the network's: retry.
		{"429", azErr(http.StatusTooManyRequests, ""), false},
		{"408", azErr(http.StatusRequestTimeout, ""), false},
		{"500 InternalError", azErr(500, "InternalError"), false},
		{"503 ServerBusy", azErr(503, "ServerBusy"), false},
		{"500 OperationTimedOut", azErr(500, "OperationTimedOut"), false},
		{"502", azErr(502, ""), false},
		{"5xx with a 4xx code", azErr(503, "InvalidInput"), false},
		{"deadline", fmt.Errorf("upload: %w", context.DeadlineExceeded), false},
		{"cancelled", context.Canceled, false},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, false},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{"unexpected EOF", io.ErrUnexpectedEOF, false},
		{"ENOSPC", pathErr(syscall.ENOSPC), false},
		{"EDQUOT", pathErr(syscall.EDQUOT), false},
		{"EIO", pathErr(syscall.EIO), false},
		// The configuration's: no retry fixes them, but neither do dead letters.
		{"401", azErr(401, "NoAuthenticationInformation"), false},
		{"403 AuthenticationFailed", azErr(403, "AuthenticationFailed"), false},
		{"403 AuthorizationFailure", azErr(403, "AuthorizationFailure"), false},
		{"404 ContainerNotFound", azErr(404, "ContainerNotFound"), false},
		{"409 ContainerBeingDeleted", azErr(409, "ContainerBeingDeleted"), false},
		{"412 LeaseIdMissing", azErr(412, "LeaseIdMissing"), false},
		{"400 InvalidHeaderValue (Azurite's unknown API version)", azErr(400, "InvalidHeaderValue"), false},
		{"400 InvalidResourceName", azErr(400, "InvalidResourceName"), false},
		{"400 without a code", azErr(400, ""), false},
		{"ENAMETOOLONG", pathErr(syscall.ENAMETOOLONG), false},
		{"EACCES", pathErr(syscall.EACCES), false},
		{"EROFS", pathErr(syscall.EROFS), false},
		{"closed sink", blobsink.ErrClosed, false},
		{"unknown", errors.New("something"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := classify(c.err)
			if subscribers.IsPermanent(got) != c.permanent {
				t.Errorf("Classify(%v): permanent = %v, want %v", c.err, !c.permanent, c.permanent)
			}
			if !errors.Is(got, c.err) {
				t.Errorf("Classify(%v) = %v, which does not wrap the error", c.err, got)
			}
		})
	}
	if classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
}

// errStore fails the names that contain a key of errs with its error, classified as the Azure store
// classifies its errors.
type errStore struct {
	blobsink.Store
	errs map[string]error
}

func (s errStore) Put(ctx context.Context, name string, data []byte, ct, ce string) error {
	for part, err := range s.errs {
		if strings.Contains(name, part) {
			return azurestore.Classify(err)
		}
	}
	return s.Store.Put(ctx, name, data, ct, ce)
}

// A batch of two hours fails permanently only when every failed part failed permanently.
func TestWritePartErrorsClassified(t *testing.T) {
	tooLarge, busy := azErr(413, "RequestBodyTooLarge"), azErr(503, "ServerBusy")
	for _, c := range []struct {
		name      string
		errs      map[string]error
		permanent bool
	}{
		{"one permanent, one stored", map[string]error{"/05/": tooLarge}, true},
		{"both permanent", map[string]error{"/05/": tooLarge, "/06/": tooLarge}, true},
		{"one transient, one stored", map[string]error{"/05/": busy}, false},
		{"one permanent, one transient", map[string]error{"/05/": tooLarge, "/06/": busy}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink := newSink(t, errStore{openDir(t), c.errs}, blobsink.Config{})
			batch := append(sinktest.Events(2, t0), sinktest.Events(2, t0.Add(time.Hour))...)
			err := sink.Write(ctxT(t), subscribers.NewBatch(batch))
			if err == nil || subscribers.IsPermanent(err) != c.permanent {
				t.Fatalf("Write = %v: permanent %v, want %v", err, subscribers.IsPermanent(err), c.permanent)
			}
			for _, want := range c.errs {
				if !errors.Is(err, want) {
					t.Errorf("Write = %v, does not wrap %v", err, want)
				}
			}
		})
	}
}

// An event that cannot be encoded fails its batch permanently and nothing of the batch is stored, in
// any hour; the batch without it is stored.
func TestWriteInvalidEventIsPermanent(t *testing.T) {
	forEachStore(t, func(t *testing.T, store blobsink.Store) {
		sink := newSink(t, store, blobsink.Config{})
		good := append(sinktest.Events(3, t0), sinktest.Events(3, t0.Add(time.Hour))...)
		unencodable := sinktest.Events(1, t0.Add(time.Hour))[0]
		unencodable.Attrs = map[string]any{"ch": make(chan int)}
		for _, bad := range []*event.Event{unencodable, nil} {
			batch := append(append([]*event.Event{}, good...), bad)
			err := sink.Write(ctxT(t), subscribers.Batch{ID: event.BatchID(good), Events: batch})
			if !subscribers.IsPermanent(err) || !errors.Is(err, blobsink.ErrInvalidEvent) {
				t.Fatalf("Write with an invalid event = %v, want a permanent ErrInvalidEvent", err)
			}
			if names := list(t, store, ""); len(names) != 0 {
				t.Fatalf("blobs %q stored, want none", names)
			}
		}
		if err := sink.Write(ctxT(t), subscribers.NewBatch(good)); err != nil {
			t.Fatalf("Write without the invalid event: %v", err)
		}
		if names := list(t, store, ""); len(names) != 2 {
			t.Fatalf("blobs %q, want one per hour", names)
		}
	})
}

// Real stores' errors, classified: a container that went away and a name the file system refuses are
// configuration errors: transient.
func TestStoreErrorsClassified(t *testing.T) {
	t.Run("azure missing container", func(t *testing.T) {
		store := openAzure(t)
		c, err := azblob.NewClientFromConnectionString(testenv.Azurite(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeleteContainer(ctxT(t), store.Container(), nil); err != nil {
			t.Fatal(err)
		}
		sink := newSink(t, store, blobsink.Config{})
		err = sink.Write(ctxT(t), subscribers.NewBatch(sinktest.Events(2, t0)))
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 404 || subscribers.IsPermanent(err) {
			t.Fatalf("Write to a deleted container = %v, want a transient 404", err)
		}
	})
	t.Run("dir name too long", func(t *testing.T) {
		store := openDir(t)
		err := store.Put(ctxT(t), strings.Repeat("n", 300)+"/x.ndjson.gz", []byte("x"), "", "")
		if !errors.Is(err, syscall.ENAMETOOLONG) || subscribers.IsPermanent(classify(err)) {
			t.Fatalf("Put of a 300-byte name = %v, want a transient ENAMETOOLONG", err)
		}
	})
}
