package taskqueue

// Hooks of the adversarial tests (advb_*_test.go).

// AdvBScriptHash returns the SHA1 of one of the queue's scripts by name
// ("extend", "look", "claim", "complete", "submit").
func AdvBScriptHash(name string) string {
	switch name {
	case "extend":
		return extendScript.Hash()
	case "look":
		return lookScript.Hash()
	case "claim":
		return claimScript.Hash()
	case "complete":
		return completeScript.Hash()
	case "submit":
		return submitScript.Hash()
	case "steal":
		return stealScript.Hash()
	}
	panic("unknown script " + name)
}
