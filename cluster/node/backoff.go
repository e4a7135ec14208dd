package main

import "time"

// Backoff is the kubelet's crash-loop back-off: the first restart is immediate, then
// 10 s doubling up to 5 min; a container that ran 10 min without failing starts over.
type Backoff struct {
	Initial, Max, ResetAfter time.Duration
	last                     time.Duration
	restarts                 int
}

func newBackoff() *Backoff {
	return &Backoff{Initial: 10 * time.Second, Max: 5 * time.Minute, ResetAfter: 10 * time.Minute}
}

// Next returns how long to wait before the next start, given how long the last run lasted.
func (b *Backoff) Next(ranFor time.Duration) time.Duration {
	if ranFor >= b.ResetAfter {
		b.restarts, b.last = 0, 0
	}
	b.restarts++
	switch {
	case b.restarts == 1:
		b.last = 0
	case b.last == 0:
		b.last = b.Initial
	default:
		b.last *= 2
	}
	if b.last > b.Max {
		b.last = b.Max
	}
	return b.last
}
