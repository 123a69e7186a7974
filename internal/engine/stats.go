package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the counters of a consumer, shared by its engines and its
// processor. See completion.Stats for what each counts.
type Stats struct {
	Delivered, Handled, Failed, Retried, DeadLettered, Dropped, Duplicates,
	Reclaimed, DeletedWhilePending, LeasesLost, RedisErrors atomic.Int64

	mu          sync.Mutex
	lastError   string
	lastErrorAt time.Time
}

// NoteRedisError counts a failed Redis call and remembers it.
func (s *Stats) NoteRedisError(err error, at time.Time) {
	s.RedisErrors.Add(1)
	s.mu.Lock()
	s.lastError, s.lastErrorAt = err.Error(), at
	s.mu.Unlock()
}

// LastError returns the last Redis error and when it happened.
func (s *Stats) LastError() (string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastError, s.lastErrorAt
}
