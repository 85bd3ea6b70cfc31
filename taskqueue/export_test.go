package taskqueue

import "github.com/redis/go-redis/v9"

// PauseHeartbeats stops (or resumes) q's heartbeats, as a process stalled
// in a long pause would: its claims are no longer extended and its
// listeners no longer advertised.
func PauseHeartbeats(q *Queue, paused bool) {
	q.run.mu.Lock()
	q.run.paused = paused
	q.run.mu.Unlock()
}

// ID returns q's id (owner of its claims).
func ID(q *Queue) string { return q.id }

// TaskKey returns the Redis key of task id.
func TaskKey(q *Queue, id string) string { return q.keys.Task(id) }

// Raw returns q's client.
func (q *Queue) Raw() redis.UniversalClient { return q.c }

// Q returns the Queue running t.
func (t *Task) Q() *Queue { return t.q }
