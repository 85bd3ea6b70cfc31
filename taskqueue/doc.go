// Package taskqueue is a task queue on Redis: a caller asks for a named task
// and waits for its result, which runs in the caller's process or on
// listeners in any process.
//
//	q, _ := taskqueue.New(rdb, "myapp", taskqueue.WithTaskFunc(run))
//	go q.Listen(ctx, []string{"resize"}, 16)            // on workers
//	task, err := q.Query(ctx, "img-42", "resize", params) // on callers
//
// # Where a task runs
//
// Query takes a Policy: Local runs the task function in this process,
// Remote queues the task for listeners and waits, LocalFirst falls back to
// listeners when the local run fails, RemoteFirst falls back to a local run
// when no listener started the task in time or their run failed, and Auto
// (the default) queues the task when a listener of its name is alive and
// runs it locally otherwise, deciding in the same atomic step as the
// enqueue. Local runs are recorded in Redis like remote ones, so GetTask,
// progress and duplicate ids work the same for both. Submit queues a task
// without waiting; Wait, from any process, waits for it.
//
// # Delivery
//
// Listeners block on Redis until tasks are queued (a doorbell list per
// name, rung by the enqueue), then claim as many as they have idle workers
// in one round trip. A claim carries a token and lasts the visibility
// timeout (WithVisibilityTimeout, 10 s by default); a live process extends
// the claims of all its running tasks in one heartbeat every third of it.
// When a worker dies, its claims run out and a live listener of the name
// delivers the tasks again, within about the visibility timeout plus a
// second: execution is at least once. A worker whose claim was lost (it
// stalled and the task went to another) can store neither progress nor a
// result; every result is keyed by task id, so the first valid completion
// wins and each caller sees exactly one. A task that kept losing its
// worker (WithMaxLost) or failed its last attempt (WithMaxAttempts, retried
// after WithRetryBackoff) becomes a dead letter: DeadLetters lists them,
// Requeue runs one again.
//
// # Waiting
//
// Each Queue value has one pub/sub subscription. A completion, a progress
// update or a cancellation is published to the subscriptions of the
// processes waiting for that task, and fanned out there to the waiting
// calls, so a thousand waiting queries share one connection and nothing
// polls. Messages are hints: Redis state is the truth, read on every
// (re)subscription and every few seconds, so a lost message delays a
// caller but never loses a result. Small results travel inside the
// message; a result is kept for the task's timeout after it finished (at
// least as long as the caller waits), or consumed by the first read with
// WithOnce (the calls waiting for it then still get it).
//
// # Faults
//
// Every operation is safe to send twice: go-redis resends a command whose
// connection broke, and each script recognises its request (a nonce) and
// answers a resend as it answered the first. A query whose submission has
// an unknown outcome withdraws the task it may have created. A claim that
// lapsed is reclaimed by whoever touches the task next: a listener, a
// query joining it, a RemoteFirst caller past its fallback point.
//
// # Duplicate ids
//
// The id names the task. A Query or Submit of an id that is pending or
// running joins that task (waiting for its result); one that finished
// returns the kept result, unless WithOnce consumed it, in which case the
// task runs again.
//
// # Payloads
//
// Params and results are JSON, never a format that can execute code, and
// are limited in size (WithMaxPayload, 1 MiB by default; ErrPayloadTooLarge).
//
// # Redis layout and cost
//
// Every key of a queue shares the hash tag {<prefix>|<suffix>}, so the queue
// works on Redis Cluster (one queue per slot); internal/keys documents the
// layout. Every operation is one Lua script, one round trip: a submit, a
// claim of up to n tasks, a completion, a progress update. Scripts read the
// clock with TIME on the server.
package taskqueue
