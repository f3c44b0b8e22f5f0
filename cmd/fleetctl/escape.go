package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Robot-supplied text (alert names, messages, stages, hostnames, topics,
// even invalid payloads) reaches the engineer's terminal. A robot whose
// credentials were stolen could put escape sequences there that clear the
// screen, retitle the window or print fake lines. Every field fleetctl
// prints for people goes through clean; every JSON document through
// safeJSON.

// unsafeRune reports whether r must not reach a terminal as is: C0 and C1
// controls and DEL (escape sequences, carriage returns, newlines that fake
// a line), format characters such as the bidi overrides (text that reads
// differently than it is), and the Unicode line and paragraph separators.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}

// clean returns s with every unsafe rune written as a Go escape (\x1b,
// \n, \u202e) and every byte that is not UTF-8 as \xNN. Safe text comes
// back unchanged, so the common case costs one scan.
func clean(s string) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || unsafeRune(r) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\n', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// cleanf formats like fmt.Sprintf and cleans the result: for lines whose
// arguments carry robot-supplied text.
func cleanf(format string, a ...any) string { return clean(fmt.Sprintf(format, a...)) }

// safeJSON makes a valid JSON document safe for a terminal without changing
// what it means: unsafe runes at or above U+007F become \uXXXX escapes
// (encoding/json already escapes those below U+0020 inside strings, and
// outside strings only whitespace may appear), bytes that are not UTF-8
// become \ufffd, as a decoder would read them.
func safeJSON(b []byte) []byte {
	i := 0
	for i < len(b) {
		r, size := utf8.DecodeRune(b[i:])
		if (r == utf8.RuneError && size == 1) || (r >= 0x7f && unsafeRune(r)) {
			break
		}
		i += size
	}
	if i == len(b) {
		return b
	}
	out := bytes.NewBuffer(make([]byte, 0, len(b)+16))
	out.Write(b[:i])
	for i < len(b) {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out.WriteString(`\ufffd`)
		case r >= 0x7f && unsafeRune(r):
			if r > 0xffff { // Cf has a few astral runes: a surrogate pair
				r1, r2 := utf16Pair(r)
				fmt.Fprintf(out, `\u%04x\u%04x`, r1, r2)
			} else {
				fmt.Fprintf(out, `\u%04x`, r)
			}
		default:
			out.Write(b[i : i+size])
		}
		i += size
	}
	return out.Bytes()
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

// writeJSON prints v as indented JSON, safe for a terminal.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", safeJSON(b))
	return err
}

// payloadLine renders a raw MQTT payload on one terminal line: valid JSON
// compacted and made safe (still JSON), anything else cleaned.
func payloadLine(p []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, p) == nil {
		return string(safeJSON(buf.Bytes()))
	}
	return clean(string(p))
}
