package script

import (
	"errors"
	"testing"
)

func TestDecoders(t *testing.T) {
	if n, err := Int64(int64(7)); err != nil || n != 7 {
		t.Errorf("Int64(7) = %d, %v", n, err)
	}
	if _, err := Int64("7"); !errors.Is(err, ErrReply) {
		t.Errorf("Int64(string) error = %v, want ErrReply", err)
	}
	if got, err := Ints([]any{int64(1), int64(2)}, 2); err != nil || got[1] != 2 {
		t.Errorf("Ints = %v, %v", got, err)
	}
	bad := []struct {
		name string
		v    any
		want int
	}{
		{"not array", int64(1), -1},
		{"wrong length", []any{int64(1)}, 2},
		{"wrong element", []any{"x"}, 1},
	}
	for _, tt := range bad {
		if _, err := Ints(tt.v, tt.want); !errors.Is(err, ErrReply) {
			t.Errorf("%s: error = %v, want ErrReply", tt.name, err)
		}
	}
	if got, err := Strings([]any{"a", "b"}); err != nil || len(got) != 2 {
		t.Errorf("Strings = %v, %v", got, err)
	}
	if _, err := Strings([]any{int64(1)}); !errors.Is(err, ErrReply) {
		t.Errorf("Strings(int) error = %v, want ErrReply", err)
	}
}
