package keys

// Task queue (package taskqueue; every key shares the tag T = {<prefix>|<suffix>}, see Tasks):
//
//	T|t|<id>    [HASH]   a task: n name, p params (JSON), x expiry ms, tt timeout ms,
//	                     m max attempts, a failed attempts, l lost claims, dl deliveries,
//	                     r ids of the taskqueue.Queue values to tell, ct created ms, s state,
//	                     tk claim token, o owner, c cancel asked ("1"), pc pt pu progress
//	                     (current, total, ms), res result (JSON), err error, f finished ms,
//	                     fb the Queue value that runs the task itself should its remote
//	                     runs fail (a RemoteFirst or Auto query), rq the nonce of the request
//	                     that created it (its incarnation), cn the nonce of the request that
//	                     claimed it for a caller ("handed": a hand-off to fb), herr the error
//	                     of a hand-off, cq gn the nonce (and answer) of the last complete and
//	                     read-once (a request resent by go-redis after a broken connection
//	                     gets the first one's answer)
//	T|q|<name>  [ZSET]   pending task ids ready to run, scored by a sequence number
//	                     (negative: requeued at the front)
//	T|d|<name>  [ZSET]   pending task ids waiting out a retry back-off, scored by when due (ms)
//	T|a|<name>  [ZSET]   active task ids, scored by their claim's deadline (ms)
//	T|x|<name>  [ZSET]   dead letters, scored by when they died (ms)
//	T|b|<name>  [LIST]   doorbell: at most one element, rung when tasks are ready
//	T|l|<name>  [ZSET]   taskqueue.Queue value ids listening to name → liveness deadline (ms)
//	T|g|<rq>|<id> [HASH] a task record (incarnation rq) consumed by a read-once (WithOnce),
//	                     kept a minute for the callers that waited for it and for the read
//	                     sent again
//	T|n|<nonce> [STRING] the answer of a cancel or requeue request, kept a minute for the
//	                     request sent again
//	T|lc|<qid>|<lid> [STRING] "<nonce>|<netstrings of id, token...>": the tasks the last
//	                     claim of Listen call lid of Queue value qid took, kept a minute for
//	                     the claim sent again
//	T|seq       [STRING] counter of ready sequence numbers and claim tokens
//	T|names     [SET]    every task name used
//	T|c|<qid>   [channel] messages to taskqueue.Queue value qid: "d <id length> <id>[<record
//	                     as a JSON array, written by cjson>]" task finished, "p <current> <total> <ms> <token> <id>"
//	                     progress, "c <id>" cancel, "o <id length> <id>" a task handed to
//	                     its caller after its remote runs failed, or pending again (see
//	                     field fb)

// Tasks names the keys of one task queue namespace, all under the hash tag
// {<prefix>|<suffix>} so that every script runs in one Redis Cluster slot.
// The scripts build the per-name and per-task keys from the tag.
type Tasks struct{ tag string }

// NewTasks returns the key names of the task queue prefix, suffix.
func NewTasks(prefix, suffix string) Tasks { return Tasks{tag: Tag(prefix, suffix)} }

// Tag returns the queue's hash tag, with its braces.
func (q Tasks) Tag() string { return q.tag }

// Task returns the key of task id.
func (q Tasks) Task(id string) string { return q.tag + "|t|" + id }

// Seq returns the queue's counter, the routing key of scripts that touch
// no single task.
func (q Tasks) Seq() string { return q.tag + "|seq" }

// Names returns the set of task names used.
func (q Tasks) Names() string { return q.tag + "|names" }

// Name returns the key of kind ("q", "d", "a", "x", "b" or "l") of task
// name.
func (q Tasks) Name(kind, name string) string { return q.tag + "|" + kind + "|" + name }

// Channel returns the channel of the Tasks value qid.
func (q Tasks) Channel(qid string) string { return q.tag + "|c|" + qid }
