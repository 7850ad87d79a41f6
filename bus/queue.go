package bus

import "time"

// deque is a FIFO ring buffer that grows by doubling. It never shrinks: its size is bounded by what
// it ever held at once, which the bus bounds.
type deque[T any] struct {
	buf  []T
	head int
	n    int
}

func (q *deque[T]) len() int { return q.n }

func (q *deque[T]) push(v T) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = v
	q.n++
}

// at returns a pointer to the i-th element from the front; valid until the next push or pop.
func (q *deque[T]) at(i int) *T { return &q.buf[(q.head+i)&(len(q.buf)-1)] }

func (q *deque[T]) pop() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
	return v
}

func (q *deque[T]) grow() {
	size := 16
	if len(q.buf) > 0 {
		size = 2 * len(q.buf)
	}
	buf := make([]T, size)
	for i := 0; i < q.n; i++ {
		buf[i] = *q.at(i)
	}
	q.buf, q.head = buf, 0
}

// retry is a nacked message of one subscription waiting for its redelivery.
type retry struct {
	it    *item
	nacks int
	due   time.Time
}

// retryHeap orders the retries of one subscription by due time (a binary min-heap).
type retryHeap []retry

func (h *retryHeap) push(r retry) {
	*h = append(*h, r)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].due.Before(s[p].due) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *retryHeap) pop() retry {
	s := *h
	r := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = retry{}
	s = s[:last]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < len(s) && s[l].due.Before(s[small].due) {
			small = l
		}
		if r := l + 1; r < len(s) && s[r].due.Before(s[small].due) {
			small = r
		}
		if small == i {
			break
		}
		s[i], s[small] = s[small], s[i]
		i = small
	}
	*h = s
	return r
}
