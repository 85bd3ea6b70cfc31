package taskqueue

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestDecodeStrings(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{`[]`, nil, true},
		{` [ "a" , "b" ] `, []string{"a", "b"}, true},
		{`["q\"b\\s\/n\nt\tr\rf\fb\b"]`, []string{"q\"b\\s/n\nt\tr\rf\fb\b"}, true},
		{`["\u0001\u00e9\ud83d\ude00"]`, []string{"\x01é😀"}, true},
		{"[\"\xff\xfe raw\"]", []string{"\xff\xfe raw"}, true},
		{`["a",]`, nil, false},
		{`["a"`, nil, false},
		{`["\x"]`, nil, false},
		{`["\u12"]`, nil, false},
		{`["a"] x`, nil, false},
		{`{"a":1}`, nil, false},
		{`[1]`, nil, false},
	} {
		got, ok := decodeStrings(c.in)
		if ok != c.ok || ok && !slices.Equal(got, c.want) {
			t.Errorf("decodeStrings(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// FuzzDecodeStrings: whatever encoding/json writes for valid UTF-8 strings
// decodes back to them.
func FuzzDecodeStrings(f *testing.F) {
	f.Add("a", "b\n\"c")
	f.Add("é😀", "\u2028")
	f.Fuzz(func(t *testing.T, a, b string) {
		in := []string{a, b}
		enc, err := json.Marshal(in)
		if err != nil {
			t.Skip()
		}
		var want []string
		if err := json.Unmarshal(enc, &want); err != nil {
			t.Fatal(err)
		}
		got, ok := decodeStrings(string(enc))
		if !ok || !slices.Equal(got, want) {
			t.Fatalf("decodeStrings(%s) = %q, %v; want %q", enc, got, ok, want)
		}
	})
}
