// Package azurestore owns sluice's Azure Blob Storage store: a blobsink.Store in an Azure container (or
// Azurite), and the classification of Azure's errors. It registers itself with blobsink when imported,
// so that blob.connection_string works; a program that archives to a local directory only does not
// import it, and does not link the Azure SDK.
//
//	import _ "github.com/sluicelog/sluice/subscribers/blobsink/azurestore"
package azurestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/sluicelog/sluice/subscribers"
	"github.com/sluicelog/sluice/subscribers/blobsink"
)

func init() {
	blobsink.RegisterRemote(func(ctx context.Context, connectionString, container string) (blobsink.Store, func() error, error) {
		s, err := Open(ctx, Config{ConnectionString: connectionString, Container: container})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}

// Classify marks the errors of Azure's answers that are the data's fault subscribers.Permanent (see
// blobsink.Classify for the rules): 413 or RequestBodyTooLarge, InvalidInput, InvalidBlobOrBlock,
// OutOfRangeInput, Md5Mismatch, Crc64Mismatch, InvalidMd5. Everything else is left as it is
// (transient). The store's Put classifies its errors so.
func Classify(err error) error {
	if err == nil || subscribers.IsPermanent(err) {
		return err
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) && (re.StatusCode == http.StatusRequestEntityTooLarge ||
		re.StatusCode >= 400 && re.StatusCode < 500 && bloberror.HasCode(err, permanentCodes...)) {
		return subscribers.Permanent(err)
	}
	return err
}

// permanentCodes are the Azure error codes (of a 4xx answer) that refuse the body itself.
var permanentCodes = []bloberror.Code{
	bloberror.RequestBodyTooLarge,
	bloberror.InvalidInput,
	bloberror.InvalidBlobOrBlock,
	bloberror.OutOfRangeInput,
	bloberror.MD5Mismatch,
	bloberror.CRC64Mismatch,
	bloberror.InvalidMD5,
}

// Config configures an Store. Its zero value is not usable: ConnectionString is required.
type Config struct {
	// ConnectionString is an Azure Storage connection string (SLUICE_BLOB_CONNECTION_STRING).
	ConnectionString string
	// Container holds the blobs; it is created when missing. Default "logs" (SLUICE_BLOB_CONTAINER).
	Container string
	// TryTimeout bounds one HTTP attempt; the SDK retries an attempt that timed out. Default 10s.
	TryTimeout time.Duration
	// MaxConnsPerHost is how many connections to the storage account are kept open for reuse. Go's
	// default transport keeps 10, fewer than the uploads a busy sink runs at once. Default 64.
	MaxConnsPerHost int
}

// Defaults of Config.
const (
	DefaultContainer       = "logs"
	DefaultTryTimeout      = 10 * time.Second
	DefaultMaxConnsPerHost = 64
)

func (c *Config) setDefaults() {
	if c.Container == "" {
		c.Container = DefaultContainer
	}
	if c.TryTimeout == 0 {
		c.TryTimeout = DefaultTryTimeout
	}
	if c.MaxConnsPerHost == 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
}

// containerName is Azure's rule: 3-63 lowercase letters, digits and single hyphens, starting and ending
// with a letter or digit.
var containerName = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

// Validate reports the first invalid value, naming its key. Zero values stand for the defaults.
func (c Config) Validate() error {
	switch {
	case c.ConnectionString == "":
		return errors.New("`connection_string` is required")
	case c.Container != "" && (len(c.Container) > 63 || !containerName.MatchString(c.Container)):
		return fmt.Errorf("`container` (%q) must be 3-63 lowercase letters, digits and single hyphens", c.Container)
	case c.TryTimeout < 0:
		return fmt.Errorf("`try_timeout` (%s) must not be negative", c.TryTimeout)
	case c.MaxConnsPerHost < 0:
		return fmt.Errorf("`max_conns_per_host` (%d) must not be negative", c.MaxConnsPerHost)
	}
	return nil
}

// Store is a Store in an Azure Blob Storage container (or Azurite). Put is one retry-safe PUT
// (UploadBuffer, up to 256 MiB) with If-None-Match: *, so that a retried or replayed upload is answered
// 409 BlobAlreadyExists, which Put reports as success.
type Store struct {
	client    *azblob.Client
	container string
	transport *http.Transport
}

// Open connects to the storage account of cfg.ConnectionString and creates cfg.Container unless it
// exists.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("blobsink: invalid Azure config: %w", err)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 2 * cfg.MaxConnsPerHost
	t.MaxIdleConnsPerHost = cfg.MaxConnsPerHost
	// Without this Go asks for gzip and hands back the decompressed bytes of a blob stored with
	// Content-Encoding: gzip; Get returns what was stored.
	t.DisableCompression = true
	opts := &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: t},
		// sluice retries whole batches itself (the route's retry policy, the bus's redelivery, the
		// breaker). The SDK's own default (3 more tries, 4 s apart) would hide an outage from the
		// breaker for the whole write timeout: one quick retry for a dropped connection is enough.
		Retry: policy.RetryOptions{TryTimeout: cfg.TryTimeout, MaxRetries: 1,
			RetryDelay: 200 * time.Millisecond, MaxRetryDelay: time.Second},
	}}
	client, err := azblob.NewClientFromConnectionString(cfg.ConnectionString, opts)
	if err != nil {
		return nil, fmt.Errorf("blobsink: invalid Azure config: `connection_string`: %w", err)
	}
	s := &Store{client: client, container: cfg.Container, transport: t}
	if _, err := client.CreateContainer(ctx, cfg.Container, nil); err != nil &&
		!bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		t.CloseIdleConnections()
		return nil, fmt.Errorf("blobsink: create container %s: %w", cfg.Container, err)
	}
	return s, nil
}

// Container returns the name of the store's container.
func (s *Store) Container() string { return s.container }

// Put implements Store.
func (s *Store) Put(ctx context.Context, name string, data []byte, contentType, contentEncoding string) error {
	h := &blob.HTTPHeaders{}
	if contentType != "" {
		h.BlobContentType = &contentType
	}
	if contentEncoding != "" {
		h.BlobContentEncoding = &contentEncoding
	}
	_, err := s.client.UploadBuffer(ctx, s.container, name, data, &azblob.UploadBufferOptions{
		HTTPHeaders: h,
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{
			IfNoneMatch: to.Ptr(azcore.ETagAny),
		}},
	})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
		return Classify(fmt.Errorf("blobsink: upload %s/%s: %w", s.container, name, err))
	}
	return nil
}

// Open implements blobsink.Opener: the body of one download, read as it comes.
func (s *Store) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	resp, err := s.client.DownloadStream(ctx, s.container, name, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return nil, fmt.Errorf("%w: %s/%s", blobsink.ErrNotFound, s.container, name)
	}
	if err != nil {
		return nil, fmt.Errorf("blobsink: download %s/%s: %w", s.container, name, err)
	}
	return resp.Body, nil
}

// Get implements Store.
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	body, err := s.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("blobsink: download %s/%s: %w", s.container, name, err)
	}
	return b, nil
}

// List implements Store.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	opts := &container.ListBlobsFlatOptions{}
	if prefix != "" {
		opts.Prefix = &prefix
	}
	pager := s.client.NewListBlobsFlatPager(s.container, opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("blobsink: list %s: %w", s.container, err)
		}
		for _, b := range page.Segment.BlobItems {
			if b.Name != nil {
				names = append(names, *b.Name)
			}
		}
	}
	return names, nil
}

// Close closes the store's idle connections. The store must not be used afterwards.
func (s *Store) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

var (
	_ blobsink.Store  = (*Store)(nil)
	_ blobsink.Opener = (*Store)(nil)
)

// Dirs implements blobsink.PruneStore: one level of a hierarchical listing (delimiter "/").
func (s *Store) Dirs(ctx context.Context, prefix string) ([]string, error) {
	opts := &container.ListBlobsHierarchyOptions{}
	if prefix != "" {
		opts.Prefix = &prefix
	}
	pager := s.client.ServiceClient().NewContainerClient(s.container).NewListBlobsHierarchyPager("/", opts)
	var dirs []string
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("blobsink: list %s/%s: %w", s.container, prefix, err)
		}
		for _, p := range page.Segment.BlobPrefixes {
			if p.Name != nil {
				dirs = append(dirs, strings.TrimPrefix(*p.Name, prefix))
			}
		}
	}
	sort.Strings(dirs)
	return dirs, nil
}

// Objects implements blobsink.PruneStore.
func (s *Store) Objects(ctx context.Context, prefix string) ([]blobsink.Object, error) {
	opts := &container.ListBlobsFlatOptions{}
	if prefix != "" {
		opts.Prefix = &prefix
	}
	var objs []blobsink.Object
	pager := s.client.NewListBlobsFlatPager(s.container, opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("blobsink: list %s/%s: %w", s.container, prefix, err)
		}
		for _, b := range page.Segment.BlobItems {
			if b.Name == nil {
				continue
			}
			o := blobsink.Object{Name: *b.Name}
			if b.Properties != nil && b.Properties.ContentLength != nil {
				o.Size = *b.Properties.ContentLength
			}
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// Delete implements blobsink.PruneStore.
func (s *Store) Delete(ctx context.Context, name string) error {
	_, err := s.client.DeleteBlob(ctx, s.container, name, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return fmt.Errorf("blobsink: delete %s/%s: %w", s.container, name, err)
	}
	return nil
}

var _ blobsink.PruneStore = (*Store)(nil)
