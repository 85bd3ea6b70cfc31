package allocator

import "context"

// Policy is filled in by policy.go's full version.
type Policy struct{}

type policyState struct{}

func newPolicyState(a *Allocator, p Policy) (*policyState, error) { return &policyState{}, nil }

func (a *Allocator) beforeMalloc(ctx context.Context) {}
