package taskqueue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
)

// advcRandString returns a random string for the cjson fuzz: raw bytes
// (every control character, quotes, backslashes, slashes, DEL, bytes that
// are not UTF-8, valid multi-byte runes, U+2028), of a random length, now
// and then tens of KiB (the inline limit is 64 KiB).
func advcRandString(r *rand.Rand) string {
	alphabet := []string{"\"", "\\", "/", "\x7f", "\x00", "\xff", "\xc3", "\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80", "\xed\xa0\x80", "\\u", "u0000", " ", "a", "[", "]", ","}
	n := r.IntN(40)
	if r.IntN(50) == 0 {
		n = 20000 + r.IntN(50000)
	}
	var b strings.Builder
	for range n {
		switch r.IntN(3) {
		case 0:
			b.WriteByte(byte(r.IntN(256)))
		case 1:
			b.WriteByte(byte(r.IntN(32)))
		default:
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
	}
	return b.String()
}

// TestAdvCDecodeStringsAgainstRedisCjson: what Redis's cjson.encode
// writes for an array of arbitrary byte strings, decodeStrings reads back
// as exactly those bytes.
func TestAdvCDecodeStringsAgainstRedisCjson(t *testing.T) {
	c := redistest.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	enc := redis.NewScript(`return cjson.encode(ARGV)`)
	r := rand.New(rand.NewPCG(1, 2))
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	cases := [][]string{{string(every)}, {"", ""}, {strings.Repeat("\x01", 65536)}}
	for range 3000 {
		in := make([]string, 1+r.IntN(6))
		for i := range in {
			in[i] = advcRandString(r)
		}
		cases = append(cases, in)
	}
	bad := 0
	for _, in := range cases {
		args := make([]any, len(in))
		for i, s := range in {
			args[i] = s
		}
		out, err := enc.Run(ctx, c, nil, args...).Text()
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeStrings(out)
		if !ok || !slices.Equal(got, in) {
			bad++
			if bad <= 3 {
				t.Errorf("cjson wrote %.200q for %.200q; decodeStrings gave %.200q, %v", out, in, got, ok)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d arrays did not survive", bad, len(cases))
	}
}

// TestAdvCInlineMessageBytes: the whole path: finish publishes the record
// through cjson, the hub decodes it (deliver), and the task it hands the
// waiter equals the record in Redis, for errors, ids and params of
// arbitrary bytes near the inline limit.
func TestAdvCInlineMessageBytes(t *testing.T) {
	c := redistest.Client(t)
	ns := redistest.Namespace(t)
	q, err := New(c, ns, WithBatching(0))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := q.hub.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	decoded := 0
	defer func() { t.Logf("%d of 60 messages decoded inline", decoded) }()
	for i := range 60 {
		id := fmt.Sprint(i, " ", advcRandString(r))
		if len(id) > 200 {
			id = id[:200]
		}
		msg := advcRandString(r)
		if i%10 == 0 {
			msg = strings.Repeat("\x1f\"\\", 21000) + advcRandString(r) // near 64 KiB
		}
		w := q.hub.watch(id)
		// A local run claimed for q, failed with msg (complete "failed").
		v, err := q.exec(ctx, submitScript, q.keys.Task(id), id, "n", `"p"`, 60000, 1, q.id, "l", q.id, 10000, "0", randomID())
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := reply(v)
		tk, _ := rest[0].(string)
		if vd, err := q.complete(ctx, &Task{ID: id, token: tk}, "failed", msg, 0); err != nil || vd != "failed" {
			t.Logf("verdict %q %v rest %v", vd, err, rest)
			t.Fatal(err)
		}
		var got *Task
		select {
		case got = <-w.hint:
		case <-time.After(3 * time.Second):
			t.Fatalf("no message for %q", id)
		}
		q.hub.unwatch(w)
		rec, err := q.GetTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		inline := len(msg)+len(`"p"`) <= 65536
		if got != nil {
			decoded++
		}
		switch {
		case inline && got == nil:
			t.Errorf("id %.60q, error of %d bytes: the message carried the record but the hub could not decode it", id, len(msg))
		case got != nil && (got.Error != rec.Error || got.ID != id || string(got.Params) != string(rec.Params) || got.State != rec.State || got.inc != rec.inc):
			t.Errorf("id %.60q: message decoded to error %.80q state %s; Redis has %.80q state %s", id, got.Error, got.State, rec.Error, rec.State)
		}
	}
}
