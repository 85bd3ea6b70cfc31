package taskqueue

// Hooks of the adversarial tests (advA).

// ScriptHash returns the EVALSHA digest of one of the queue's scripts, by
// file name ("submit.lua", "claim.lua", …), so a test can recognise it on
// the wire.
func ScriptHash(name string) string {
	for _, s := range []interface {
		Name() string
		Hash() string
	}{submitScript, claimScript, extendScript, completeScript, progressScript, lookScript, cancelScript, stealScript, requeueScript, statsScript} {
		if s.Name() == name {
			return s.Hash()
		}
	}
	panic("no script " + name)
}

// Tag returns q's hash tag.
func Tag(q *Queue) string { return q.keys.Tag() }
