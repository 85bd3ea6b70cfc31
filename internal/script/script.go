// Package script runs the library's embedded Lua scripts.
//
// Every script is a .lua file embedded next to the Go code that runs it and
// wrapped once in a package-level *Script. Run sends EVALSHA and falls back to
// EVAL when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH), so
// a warm call is one round trip. The decoders below turn replies into Go
// values with checked type assertions: a reply of an unexpected shape is an
// error, never a panic.
package script

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ErrReply reports a script reply whose shape the caller did not expect.
var ErrReply = errors.New("unexpected script reply")

// Script is one embedded Lua script.
type Script struct {
	name, src string
	s         *redis.Script
}

// New wraps the Lua source src, read from the file name (used in errors).
func New(name, src string) *Script {
	return &Script{name: name, src: src, s: redis.NewScript(src)}
}

// Name returns the file name of the script.
func (s *Script) Name() string { return s.name }

// Hash returns the SHA1 digest that EVALSHA uses.
func (s *Script) Hash() string { return s.s.Hash() }

// Processor sends one command and waits for its reply: every
// redis.UniversalClient is one, and so is a batch.Batcher.
type Processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// Run executes the script with EVALSHA through p, falling back to EVAL on
// NOSCRIPT.
func (s *Script) Run(ctx context.Context, p Processor, keys []string, args ...any) *redis.Cmd {
	cmd := s.cmd(ctx, "evalsha", s.s.Hash(), keys, args)
	if err := p.Process(ctx, cmd); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd = s.cmd(ctx, "eval", s.src, keys, args)
		_ = p.Process(ctx, cmd)
	}
	return cmd
}

// cmd builds an EVAL or EVALSHA command.
func (s *Script) cmd(ctx context.Context, name, body string, keys []string, args []any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, name, body, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	return redis.NewCmd(ctx, a...)
}

// Load loads the script into the script cache (of every master, for a
// cluster client). Scripts must be loaded before they are sent with EVALSHA
// inside a pipeline or transaction.
func (s *Script) Load(ctx context.Context, c redis.Scripter) error {
	if err := s.s.Load(ctx, c).Err(); err != nil {
		return fmt.Errorf("load %s: %w", s.name, err)
	}
	return nil
}

// Int64 decodes an integer reply.
func Int64(v any) (int64, error) {
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("%w: want integer, got %T", ErrReply, v)
	}
	return n, nil
}

// Ints decodes an array reply of integers, checking its length when want ≥ 0.
func Ints(v any, want int) ([]int64, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: want array, got %T", ErrReply, v)
	}
	if want >= 0 && len(arr) != want {
		return nil, fmt.Errorf("%w: want %d elements, got %d", ErrReply, want, len(arr))
	}
	out := make([]int64, len(arr))
	for i, e := range arr {
		n, err := Int64(e)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		out[i] = n
	}
	return out, nil
}

// Strings decodes an array reply of strings.
func Strings(v any) ([]string, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: want array, got %T", ErrReply, v)
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%w: element %d: want string, got %T", ErrReply, i, e)
		}
		out[i] = s
	}
	return out, nil
}
