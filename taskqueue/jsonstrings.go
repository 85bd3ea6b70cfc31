package taskqueue

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// decodeStrings decodes a JSON array of strings as Redis's cjson writes it,
// keeping the bytes of a string that is not valid UTF-8 as they are (cjson
// copies them unescaped; encoding/json would replace them). It reports
// false for anything else.
func decodeStrings(s string) ([]string, bool) {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '[' {
		return nil, false
	}
	i = skipSpace(s, i+1)
	var out []string
	if i < len(s) && s[i] == ']' {
		return out, skipSpace(s, i+1) == len(s)
	}
	for {
		if i >= len(s) || s[i] != '"' {
			return nil, false
		}
		v, n, ok := decodeString(s, i+1)
		if !ok {
			return nil, false
		}
		out = append(out, v)
		i = skipSpace(s, n)
		if i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case ']':
			return out, skipSpace(s, i+1) == len(s)
		default:
			return nil, false
		}
	}
}

// decodeString decodes the JSON string whose body starts at s[i] (after
// its opening quote) and returns it and the index after its closing quote.
func decodeString(s string, i int) (string, int, bool) {
	var b []byte
	for start := i; i < len(s); {
		switch c := s[i]; c {
		case '"':
			if b == nil {
				return s[start:i], i + 1, true
			}
			return string(append(b, s[start:i]...)), i + 1, true
		case '\\':
			b = append(b, s[start:i]...)
			if i+1 >= len(s) {
				return "", 0, false
			}
			switch e := s[i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, n, ok := hex4(s, i+2)
				if !ok {
					return "", 0, false
				}
				i = n - 2
				if utf16.IsSurrogate(r) {
					if r2, n2, ok := hex4(s, n+2); ok && n+1 < len(s) && s[n] == '\\' && s[n+1] == 'u' {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							r, i = d, n2-2
						}
					}
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", 0, false
			}
			i += 2
			start = i
		default:
			i++
		}
	}
	return "", 0, false
}

// hex4 decodes the four hex digits at s[i] and returns the index after them.
func hex4(s string, i int) (rune, int, bool) {
	if i+4 > len(s) {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(s[i:i+4], 16, 32)
	if err != nil {
		return 0, 0, false
	}
	return rune(v), i + 4, true
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}
