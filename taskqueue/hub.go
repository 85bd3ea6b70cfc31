package taskqueue

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/notify"
)

// hub is a Queue value's one subscription, to its channel: it fans the
// messages about tasks out to the calls waiting for them (however many,
// over one connection) and hands cancellations to the runner. Messages are
// hints: a waiter reads the task's state when told and after every
// (re)subscription, and the hub reads the state of every waited task in
// one pipeline every few seconds (sweep), so a lost message delays a
// waiter but never loses a result.
type hub struct {
	q   *Queue
	sub *notify.Sub

	sweeping sync.Once
	mu       sync.Mutex
	watches  map[string]map[*watch]struct{}
}

// watch is one call waiting for task id.
type watch struct {
	id   string
	hint chan *Task       // a finished task (nil: read it), buffered 1
	prog chan progressMsg // the latest progress, buffered 1
}

// progressMsg is a progress update of the run whose claim has token.
type progressMsg struct {
	Progress
	token string
}

func newHub(q *Queue) *hub {
	h := &hub{q: q, watches: map[string]map[*watch]struct{}{}}
	h.sub = notify.New(q.c, q.keys.Channel(q.id), h.deliver, ErrClosed, "taskqueue")
	return h
}

// ensure subscribes on first use and waits for the confirmation, so that
// no message sent after a task was submitted is missed, and starts the
// sweep.
func (h *hub) ensure(ctx context.Context) error {
	if err := h.sub.Ensure(ctx); err != nil {
		return err
	}
	h.sweeping.Do(func() { go h.sweep() })
	return nil
}

// kicked is closed at the next resubscription.
func (h *hub) kicked() <-chan struct{} { return h.sub.Kicked() }

func (h *hub) close() { h.sub.Close() }

// sweepEvery is how often the hub reads the state of every task waited
// for, in case a message was lost.
const sweepEvery = 5 * time.Second

// sweep is the safety net: every sweepEvery, one pipeline reads the state
// of every task a call waits for, and the calls whose task finished (or
// vanished) are told to read it.
func (h *hub) sweep() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-h.sub.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		ids := make([]string, 0, len(h.watches))
		for id := range h.watches {
			ids = append(ids, id)
		}
		h.mu.Unlock()
		for len(ids) > 0 {
			n := min(len(ids), 1000)
			h.sweepIDs(ids[:n])
			ids = ids[n:]
		}
	}
}

func (h *hub) sweepIDs(ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), sweepEvery)
	defer cancel()
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := h.q.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGet(ctx, h.q.keys.Task(id), "s")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		h.q.log.Warn("taskqueue: reading the state of waited tasks failed", "err", err)
		return
	}
	for i, c := range cmds {
		st, err := c.Result()
		if errors.Is(err, redis.Nil) || err == nil && State(st).Terminal() {
			h.each(ids[i], func(w *watch) {
				select {
				case w.hint <- nil:
				default:
				}
			})
		}
	}
}

// deliver routes one message; see internal/keys for their format.
func (h *hub) deliver(payload string) {
	if len(payload) < 3 || payload[1] != ' ' {
		return
	}
	kind, rest := payload[0], payload[2:]
	switch kind {
	case 'c':
		h.q.run.cancelRun(rest, ErrCancelled)
	case 'd', 'o':
		ns, after, ok := strings.Cut(rest, " ")
		n, err := strconv.Atoi(ns)
		if !ok || err != nil || n < 0 || n > len(after) {
			return
		}
		id, body := after[:n], after[n:]
		var t *Task
		if kind == 'd' && body != "" {
			if flat, ok := decodeStrings(body); ok {
				if tt, err := taskFromFlat(id, toAny(flat)); err == nil && tt.State.Terminal() {
					t = tt
				}
			}
		}
		// "o": a task handed back to its caller; it reads the claim.
		h.each(id, func(w *watch) {
			select {
			case w.hint <- t:
			default:
			}
		})
	case 'p':
		f := strings.SplitN(rest, " ", 5)
		if len(f) != 5 {
			return
		}
		cur, err1 := strconv.ParseFloat(f[0], 64)
		total, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			return
		}
		p := progressMsg{Progress{Current: cur, Total: total, UpdatedAt: msTime(f[2])}, f[3]}
		h.each(f[4], func(w *watch) {
			select {
			case <-w.prog:
			default:
			}
			select {
			case w.prog <- p:
			default:
			}
		})
	}
}

// share hands terminal task t, which the call of from has read, to the
// other calls of this process waiting for it, so that a read-once delete
// after it cannot leave them without the result.
func (h *hub) share(from *watch, t *Task) {
	h.each(t.ID, func(w *watch) {
		if w == from {
			return
		}
		select {
		case <-w.hint:
		default:
		}
		select {
		case w.hint <- t:
		default:
		}
	})
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (h *hub) each(id string, f func(*watch)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watches[id] {
		f(w)
	}
}

// watch registers a waiter for task id; call unwatch when done.
func (h *hub) watch(id string) *watch {
	w := &watch{id: id, hint: make(chan *Task, 1), prog: make(chan progressMsg, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	ws := h.watches[id]
	if ws == nil {
		ws = map[*watch]struct{}{}
		h.watches[id] = ws
	}
	ws[w] = struct{}{}
	return w
}

func (h *hub) unwatch(w *watch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ws := h.watches[w.id]
	delete(ws, w)
	if len(ws) == 0 {
		delete(h.watches, w.id)
	}
}
