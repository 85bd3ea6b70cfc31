package lock_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/lock"
)

func TestLockUnlock(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		steps := []struct {
			name string
			run  func() (bool, error)
			want bool
		}{
			{"lock free key", func() (bool, error) { return l.Lock(ctx, "k", "a", time.Minute) }, true},
			{"lock held key", func() (bool, error) { return l.Lock(ctx, "k", "b", time.Minute) }, false},
			{"lock held key, same value", func() (bool, error) { return l.Lock(ctx, "k", "a", time.Minute) }, false},
			{"is locked", func() (bool, error) { return l.IsLocked(ctx, "k") }, true},
			{"other key free", func() (bool, error) { return l.IsLocked(ctx, "other") }, false},
			{"unlock", func() (bool, error) { return l.Unlock(ctx, "k") }, true},
			{"unlock again", func() (bool, error) { return l.Unlock(ctx, "k") }, false},
			{"is locked after unlock", func() (bool, error) { return l.IsLocked(ctx, "k") }, false},
			{"lock after unlock", func() (bool, error) { return l.Lock(ctx, "k", "b", time.Minute) }, true},
		}
		for _, s := range steps {
			got, err := s.run()
			if err != nil || got != s.want {
				t.Fatalf("%s: got %v, %v; want %v", s.name, got, err, s.want)
			}
		}
		if v, ok, err := l.Value(ctx, "k"); err != nil || !ok || v != "b" {
			t.Fatalf("Value = %q, %v, %v; want b, true", v, ok, err)
		}
		if v, ok, err := l.Value(ctx, "missing"); err != nil || ok || v != "" {
			t.Fatalf("Value(missing) = %q, %v, %v", v, ok, err)
		}
	})
}

func TestRLockReentrant(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		if ok, err := l.RLock(ctx, "k", "me", time.Second); err != nil || !ok {
			t.Fatalf("first RLock = %v, %v", ok, err)
		}
		if ok, err := l.RLock(ctx, "k", "me", time.Hour); err != nil || !ok {
			t.Fatalf("reentrant RLock = %v, %v", ok, err)
		}
		// The reentrant call refreshed the TTL to an hour.
		if st, err := l.Status(ctx, "k", 10*time.Minute); err != nil || st != lock.Unavailable {
			t.Fatalf("Status after refresh = %v, %v; want unavailable (TTL an hour)", st, err)
		}
		if ok, err := l.RLock(ctx, "k", "you", time.Second); err != nil || ok {
			t.Fatalf("RLock by another value = %v, %v; want false", ok, err)
		}
		if v, _, _ := l.Value(ctx, "k"); v != "me" {
			t.Fatalf("value changed to %q by failed RLock", v)
		}
		if ok, err := l.RLock(ctx, "k", "me", 0); err != nil || !ok {
			t.Fatalf("RLock permanent = %v, %v", ok, err)
		}
		if st, _ := l.Status(ctx, "k", time.Second); st != lock.Permanent {
			t.Fatalf("Status = %v, want permanent", st)
		}
	})
}

func TestUpdate(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		if _, err := l.Lock(ctx, "k", "a", time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := l.Update(ctx, "k", "b", 0); err != nil {
			t.Fatal(err)
		}
		if v, ok, _ := l.Value(ctx, "k"); !ok || v != "b" {
			t.Fatalf("Value after Update = %q, %v", v, ok)
		}
		if st, _ := l.Status(ctx, "k", time.Minute); st != lock.Permanent {
			t.Fatalf("Status after Update(ttl 0) = %v, want permanent", st)
		}
	})
}

func TestStatus(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		mustLock := func(key string, ttl time.Duration) {
			t.Helper()
			if ok, err := l.Lock(ctx, key, "v", ttl); err != nil || !ok {
				t.Fatalf("Lock(%s) = %v, %v", key, ok, err)
			}
		}
		mustLock("locked", time.Minute)
		mustLock("long", time.Hour)
		mustLock("forever", 0)
		mustLock("negative", -time.Second)
		tests := []struct {
			key  string
			want lock.Status
		}{
			{"missing", lock.Free},
			{"locked", lock.Locked},
			{"long", lock.Unavailable},
			{"forever", lock.Permanent},
			{"negative", lock.Permanent},
		}
		for _, tt := range tests {
			if got, err := l.Status(ctx, tt.key, 2*time.Minute); err != nil || got != tt.want {
				t.Errorf("Status(%s) = %v, %v; want %v", tt.key, got, err, tt.want)
			}
		}
	})
}

func TestExpiryHandOver(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		if ok, err := l.Lock(ctx, "k", "first", 100*time.Millisecond); err != nil || !ok {
			t.Fatalf("Lock = %v, %v", ok, err)
		}
		if ok, _ := l.Lock(ctx, "k", "second", time.Minute); ok {
			t.Fatal("second holder got a live lock")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			ok, err := l.Lock(ctx, "k", "second", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("lock never expired")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if v, _, _ := l.Value(ctx, "k"); v != "second" {
			t.Fatalf("value after hand-over = %q", v)
		}
	})
}

func TestConditional(t *testing.T) {
	type step struct {
		del          bool
		op           lock.Op
		compare, set float64
		want         bool
		stored       string // "" = missing afterwards
	}
	tests := []struct {
		name  string
		start string // "" = missing
		steps []step
	}{
		{"missing key counts as holding", "", []step{{false, lock.GT, 5, 5, true, "5"}}},
		{"gt holds", "3", []step{{false, lock.GT, 5, 7, true, "7"}}},
		{"gt fails on equal", "5", []step{{false, lock.GT, 5, 9, false, "5"}}},
		{"lt", "5", []step{{false, lock.LT, 3, 3, true, "3"}, {false, lock.LT, 4, 4, false, "3"}}},
		{"ge within epsilon", "5", []step{{false, lock.GE, 5 - 1e-7, 1, true, "1"}}},
		{"ge fails", "5", []step{{false, lock.GE, 4.9, 1, false, "5"}}},
		{"le within epsilon", "5", []step{{false, lock.LE, 5 + 1e-7, 2, true, "2"}}},
		{"eq", "2.5", []step{{false, lock.EQ, 2.5, 3, true, "3"}, {false, lock.EQ, 2.5, 4, false, "3"}}},
		{"ne", "2.5", []step{{false, lock.NE, 2.5, 3, false, "2.5"}, {false, lock.NE, 7, 0.125, true, "0.125"}}},
		{"delete gt", "3", []step{{true, lock.GT, 2, 0, false, "3"}, {true, lock.GT, 4, 0, true, ""}}},
		{"delete missing", "", []step{{true, lock.EQ, 1, 0, true, ""}}},
		{"delete ne", "1", []step{{true, lock.NE, 1, 0, false, "1"}, {true, lock.NE, 2, 0, true, ""}}},
	}
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		for i, tt := range tests {
			key := "k" + strings.Repeat("x", i)
			if tt.start != "" {
				if err := l.Update(ctx, key, tt.start, time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			for j, s := range tt.steps {
				var got bool
				var err error
				if s.del {
					got, err = l.DeleteIf(ctx, key, s.op, s.compare)
				} else {
					got, err = l.SetIf(ctx, key, s.op, s.compare, s.set, time.Minute)
				}
				if err != nil || got != s.want {
					t.Fatalf("%s step %d: got %v, %v; want %v", tt.name, j, got, err, s.want)
				}
				v, ok, err := l.Value(ctx, key)
				if err != nil || ok != (s.stored != "") || v != s.stored {
					t.Fatalf("%s step %d: stored %q (%v, %v), want %q", tt.name, j, v, ok, err, s.stored)
				}
			}
		}
		// Expiry of SetIf.
		if ok, err := l.SetIf(ctx, "ttl", lock.GT, 1, 1, 0); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if st, _ := l.Status(ctx, "ttl", time.Hour); st != lock.Permanent {
			t.Fatalf("SetIf with ttl 0: status %v, want permanent", st)
		}
		if ok, err := l.SetIf(ctx, "ttl", lock.GT, 2, 2, time.Minute); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if st, _ := l.Status(ctx, "ttl", time.Hour); st != lock.Locked {
			t.Fatalf("SetIf with ttl: status %v, want locked", st)
		}
		// A value that is not a number is refused and left alone.
		if _, err := l.Lock(ctx, "word", "owner-token", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := l.SetIf(ctx, "word", lock.GT, 1, 1, 0); !errors.Is(err, lock.ErrNotNumber) {
			t.Fatalf("SetIf on a word: %v, want ErrNotNumber", err)
		}
		if _, err := l.DeleteIf(ctx, "word", lock.NE, 1); !errors.Is(err, lock.ErrNotNumber) {
			t.Fatalf("DeleteIf on a word: %v, want ErrNotNumber", err)
		}
		if v, _, _ := l.Value(ctx, "word"); v != "owner-token" {
			t.Fatalf("word changed to %q", v)
		}
	})
}

func TestPermanentLock(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		if ok, err := l.Lock(ctx, "k", "v", 0); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if st, _ := l.Status(ctx, "k", time.Second); st != lock.Permanent {
			t.Fatalf("Status = %v", st)
		}
		h, err := l.TryAcquire(ctx, "h", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !h.ValidUntil().IsZero() {
			t.Fatalf("permanent handle has a validity end %v", h.ValidUntil())
		}
		if st, _ := l.Status(ctx, "h", time.Second); st != lock.Permanent {
			t.Fatalf("Status of permanent handle key = %v", st)
		}
		if err := h.KeepAlive(ctx); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Fatalf("KeepAlive on a permanent lock: %v", err)
		}
		select {
		case <-h.Lost():
			t.Fatal("permanent lock reported lost")
		case <-time.After(50 * time.Millisecond):
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestInvalidInput(t *testing.T) {
	long := strings.Repeat("k", 1025)
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		tests := []struct {
			name string
			run  func() error
			want error
		}{
			{"empty key", func() error { _, err := l.Lock(ctx, "", "v", time.Second); return err }, lock.ErrInvalidKey},
			{"long key", func() error { _, err := l.Lock(ctx, long, "v", time.Second); return err }, lock.ErrInvalidKey},
			{"long key rlock", func() error { _, err := l.RLock(ctx, long, "v", time.Second); return err }, lock.ErrInvalidKey},
			{"empty key unlock", func() error { _, err := l.Unlock(ctx, ""); return err }, lock.ErrInvalidKey},
			{"empty key value", func() error { _, _, err := l.Value(ctx, ""); return err }, lock.ErrInvalidKey},
			{"empty key status", func() error { _, err := l.Status(ctx, "", time.Second); return err }, lock.ErrInvalidKey},
			{"empty key update", func() error { return l.Update(ctx, "", "v", time.Second) }, lock.ErrInvalidKey},
			{"sub-ms ttl", func() error { _, err := l.Lock(ctx, "k", "v", time.Microsecond); return err }, lock.ErrInvalidArgument},
			{"sub-ms ttl update", func() error { return l.Update(ctx, "k", "v", time.Microsecond) }, lock.ErrInvalidArgument},
			{"unknown op", func() error { _, err := l.SetIf(ctx, "k", lock.Op(42), 1, 1, 0); return err }, lock.ErrInvalidArgument},
			{"NaN", func() error { _, err := l.SetIf(ctx, "k", lock.GT, nan(), 1, 0); return err }, lock.ErrInvalidArgument},
			{"Inf value", func() error { _, err := l.SetIf(ctx, "k", lock.GT, 1, inf(), 0); return err }, lock.ErrInvalidArgument},
			{"acquire empty key", func() error { _, err := l.TryAcquire(ctx, "", time.Second); return err }, lock.ErrInvalidKey},
			{"negative linear retry", func() error {
				_, err := l.Acquire(ctx, "k", time.Second, lock.WithRetry(lock.LinearRetry(-time.Second)))
				return err
			}, lock.ErrInvalidArgument},
			{"bad backoff", func() error {
				_, err := l.Acquire(ctx, "k", time.Second, lock.WithRetry(lock.ExponentialBackoff(time.Second, time.Millisecond)))
				return err
			}, lock.ErrInvalidArgument},
			{"negative retry limit", func() error {
				_, err := l.Acquire(ctx, "k", time.Second, lock.WithRetry(lock.LimitRetry(lock.LinearRetry(time.Millisecond), -1)))
				return err
			}, lock.ErrInvalidArgument},
			{"margin over ttl", func() error {
				_, err := l.Acquire(ctx, "k", time.Second, lock.WithSafetyMargin(2*time.Second))
				return err
			}, lock.ErrInvalidArgument},
		}
		for _, tt := range tests {
			if err := tt.run(); !errors.Is(err, tt.want) {
				t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
			}
		}
		// Nothing was written.
		if ok, err := l.IsLocked(ctx, "k"); err != nil || ok {
			t.Fatalf("invalid calls changed state: locked=%v err=%v", ok, err)
		}
	})
}

func TestStatusAndOpStrings(t *testing.T) {
	tests := []struct{ got, want string }{
		{lock.Free.String(), "free"},
		{lock.Locked.String(), "locked"},
		{lock.Unavailable.String(), "unavailable"},
		{lock.Permanent.String(), "permanent"},
		{lock.Status(9).String(), "Status(9)"},
		{lock.GT.String(), "gt"},
		{lock.NE.String(), "ne"},
		{lock.Op(0).String(), "Op(0)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
