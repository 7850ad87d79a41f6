package blobsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultDir is where blobs go when no Azure connection string is configured: the embedded default.
const DefaultDir = "./sluice-data/blobs"

// tempPrefix starts the names of files being written; List skips them.
const tempPrefix = ".tmp-"

// DirStore is a Store in a local directory: an object named "a/b/c.ndjson.gz" is the file a/b/c.ndjson.gz
// below the directory. A Put writes a temporary file in the object's directory, syncs it, then hard-links
// it to its final name, which creates the name only if it does not exist yet: a reader never sees a
// partial object, and of two concurrent writers of one name exactly one wins while the other gets nil.
// New directories and the final name are synced to disk before Put returns. The file system must
// support hard links.
//
// A Put interrupted by a crash (kill -9, power loss) leaves its temporary file behind, never linked:
// the object was not stored. NewDirStore removes such files.
type DirStore struct {
	root    string
	removed []string
}

// NewDirStore returns a store rooted at dir, creating dir if needed. It removes every temporary file
// below dir, the leftovers of Puts interrupted by a crash, and says which in Removed. It is meant to
// be called as a process starts: a Put under way in another process that uses the same directory
// would find its temporary file gone and fail (transiently: a retry writes it again).
func NewDirStore(dir string) (*DirStore, error) {
	if dir == "" {
		return nil, errors.New("blobsink: DirStore needs a directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("blobsink: %w", err)
	}
	removed, err := removeTemporaries(dir)
	if err != nil {
		return nil, fmt.Errorf("blobsink: remove the temporary files of interrupted writes: %w", err)
	}
	return &DirStore{root: dir, removed: removed}, nil
}

// Removed returns the temporary files of interrupted Puts that NewDirStore removed, as paths below
// the store's directory (slash-separated, sorted).
func (s *DirStore) Removed() []string { return s.removed }

// removeTemporaries removes the temporary files below root and returns their paths relative to it.
func removeTemporaries(root string) ([]string, error) {
	var removed []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		removed = append(removed, filepath.ToSlash(rel))
		return nil
	})
	return removed, err // WalkDir visits in lexical order
}

// Dir returns the store's directory.
func (s *DirStore) Dir() string { return s.root }

func (s *DirStore) path(name string) (string, error) {
	if !fs.ValidPath(name) || name == "." || strings.Contains(name, `\`) {
		return "", fmt.Errorf("blobsink: invalid object name %q", name)
	}
	return filepath.Join(s.root, filepath.FromSlash(name)), nil
}

// Put implements Store. contentType and contentEncoding are not kept: the name's extension says them.
func (s *DirStore) Put(ctx context.Context, name string, data []byte, _, _ string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	final, err := s.path(name)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(final); err == nil { // already written (a replay): nothing to do
		return nil
	}
	dir := filepath.Dir(final)
	if err := s.mkdirAll(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("blobsink: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the link, or on failure
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("blobsink: write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("blobsink: sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("blobsink: write %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Link fails with EEXIST instead of replacing the final name: create-only, atomically.
	if err := os.Link(tmp.Name(), final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // a concurrent writer stored it first
		}
		return fmt.Errorf("blobsink: %w", err)
	}
	return syncDir(dir)
}

// mkdirAll creates dir and its missing parents below the root, syncing each parent that got a new
// entry, so that the path of a new object survives a crash.
func (s *DirStore) mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir && dir != filepath.Clean(s.root) {
		if err := s.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made by a concurrent Put
		}
		return fmt.Errorf("blobsink: %w", err)
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blobsink: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blobsink: sync %s: %w", dir, err)
	}
	return nil
}

// Get implements Store.
func (s *DirStore) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("blobsink: %w", err)
	}
	return b, nil
}

// Open implements Opener.
func (s *DirStore) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("blobsink: %w", err)
	}
	return f, nil
}

// List implements Store. Files being written (temporary names) are not listed.
func (s *DirStore) List(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	start := s.root // walk only below the prefix's directory
	if i := strings.LastIndexByte(prefix, '/'); i > 0 {
		if !fs.ValidPath(prefix[:i]) {
			return nil, fmt.Errorf("blobsink: invalid prefix %q", prefix)
		}
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll // nothing stored below the prefix yet
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		if name := filepath.ToSlash(rel); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobsink: list %s: %w", s.root, err)
	}
	sort.Strings(names)
	return names, nil
}

var (
	_ Store  = (*DirStore)(nil)
	_ Opener = (*DirStore)(nil)
)

// Dirs implements PruneStore.
func (s *DirStore) Dirs(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := s.root
	if p := strings.TrimSuffix(prefix, "/"); p != "" {
		var err error
		if dir, err = s.path(p); err != nil {
			return nil, err
		}
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("blobsink: %w", err)
	}
	var dirs []string
	for _, e := range entries { // ReadDir sorts by name
		if e.IsDir() {
			dirs = append(dirs, e.Name()+"/")
		}
	}
	return dirs, nil
}

// Objects implements PruneStore.
func (s *DirStore) Objects(ctx context.Context, prefix string) ([]Object, error) {
	names, err := s.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	objs := make([]Object, 0, len(names))
	for _, n := range names {
		p, err := s.path(n)
		if err != nil {
			return nil, err
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("blobsink: %w", err)
		}
		objs = append(objs, Object{Name: n, Size: fi.Size()})
	}
	return objs, nil
}

// Delete implements PruneStore: it removes the file, then the directories above it that it left
// empty (up to the store's directory), so that a pruned hour leaves no empty directories behind.
func (s *DirStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobsink: %w", err)
	}
	root := filepath.Clean(s.root)
	for dir := filepath.Dir(p); dir != root && strings.HasPrefix(dir, root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty (or gone): the directories above are not empty either
			break
		}
	}
	return nil
}

var _ PruneStore = (*DirStore)(nil)
