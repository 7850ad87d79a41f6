package event

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	"github.com/google/uuid"
)

// idSource makes the UUIDv7 ids of New. It is uuid.NewV7's layout and ordering (48-bit Unix
// milliseconds, then 12 bits of sub-millisecond time that also serve as a counter, so that ids made in
// one process never go backwards, then 62 random bits), but it takes its random bits from a buffer
// refilled from crypto/rand 4 KiB at a time: one read of the system's source per 512 ids instead of
// one per id, and no allocation. The buffer is this package's own; no global setting of the uuid
// package is changed.
var idSource struct {
	mu   sync.Mutex
	last int64 // the last id's time: milliseconds<<12 | sub-millisecond counter
	left int   // unused random bytes at the end of buf
	buf  [4096]byte
}

// newID returns a fresh UUIDv7 for the time now.
func newID(now time.Time) uuid.UUID {
	nano := now.UnixNano()
	ms := nano / int64(time.Millisecond)
	t := ms<<12 | (nano-ms*int64(time.Millisecond))>>8 // the fraction of the millisecond in 256 ns steps: 0 to 3906

	var id uuid.UUID
	s := &idSource
	s.mu.Lock()
	if t <= s.last { // same 256 ns step as the last id, or the clock went back: count on from the last
		t = s.last + 1
	}
	s.last = t
	if s.left < 8 {
		rand.Read(s.buf[:]) // never fails (it crashes the program if the system's source does)
		s.left = len(s.buf)
	}
	used := s.buf[len(s.buf)-s.left:][:8]
	copy(id[8:], used)
	clear(used) // spent random bits do not stay in memory
	s.left -= 8
	s.mu.Unlock()

	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(t>>12)<<16)
	copy(id[:6], ts[:6])           // 48-bit Unix milliseconds
	id[6] = 0x70 | byte(t>>8)&0x0f // version 7, then the top 4 bits of the counter
	id[7] = byte(t)                // the counter's low 8 bits
	id[8] = id[8]&0x3f | 0x80      // RFC 9562 variant
	return id
}
