package publishers

import "strings"

// keySet is a set of names matched without regard to case (header names, query parameters, JSON keys),
// built for the request path, where most names looked up are not in it: a filter on a name's length and
// first and last bytes rejects most at once, and an ASCII name that passes it costs one map access,
// without allocating. Names with other bytes are compared with Unicode case folding, when their length
// passes the filter.
type keySet struct {
	filter [filterBits / 64]uint64
	lower  map[string]struct{} // the names in ASCII lower case
	all    []string            // the names as given
}

const filterBits = 4096

func filterIndex(n int, first, last byte) uint {
	return (uint(n)*131 + uint(first)*31 + uint(last)) & (filterBits - 1)
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func newKeySet(names []string) keySet {
	s := keySet{lower: make(map[string]struct{}, len(names)), all: append([]string(nil), names...)}
	for _, n := range names {
		s.lower[strings.ToLower(n)] = struct{}{}
		if n != "" {
			i := filterIndex(len(n), lowerASCII(n[0]), lowerASCII(n[len(n)-1]))
			s.filter[i/64] |= 1 << (i % 64)
		}
	}
	return s
}

func (s *keySet) empty() bool { return len(s.all) == 0 }

// has reports whether name is in the set, ignoring case.
func has[T string | []byte](s *keySet, name T) bool {
	n := len(name)
	if n == 0 {
		return false
	}
	first, last := name[0], name[n-1]
	if first >= 0x80 || last >= 0x80 {
		return matchKey(string(name), s.all) // Unicode case folding
	}
	if i := filterIndex(n, lowerASCII(first), lowerASCII(last)); s.filter[i/64]&(1<<(i%64)) == 0 {
		return false
	}
	return s.lookup(string(name))
}

// lookup is has for the names that passed the filter.
func (s *keySet) lookup(name string) bool {
	n := len(name)
	if n > 64 {
		return matchKey(name, s.all)
	}
	var buf [64]byte
	for i := 0; i < n; i++ {
		c := name[i]
		if c >= 0x80 {
			return matchKey(name, s.all)
		}
		buf[i] = lowerASCII(c)
	}
	_, ok := s.lower[string(buf[:n])]
	return ok
}

// matchKey reports whether key equals one of keys, ignoring case (with Unicode case folding).
func matchKey(key string, keys []string) bool {
	for _, k := range keys {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}
