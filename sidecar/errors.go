package sidecar

import (
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// apiError is an OpenAI-shaped error response:
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
type apiError struct {
	status  int
	message string
	typ     string
	param   string // empty renders as null
	code    string
	// retryAfter, when positive, sets the Retry-After header (whole seconds,
	// rounded up, at least 1).
	retryAfter time.Duration
}

// Error types and codes of DESIGN.md's error table.
const (
	typeInvalidRequest = "invalid_request_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
	typeAuth           = "authentication_error"

	codeInvalidRequest    = "invalid_request_error"
	codeTooLarge          = "request_too_large"
	codeModelNotFound     = "model_not_found"
	codeRateLimit         = "rate_limit_exceeded"
	codeNoHealthyUpstream = "no_healthy_upstream"
	codeUpstreamError     = "upstream_error"
	codeUpstreamTimeout   = "upstream_timeout"
	codeNotFound          = "not_found"
	codeMethodNotAllowed  = "method_not_allowed"
)

func errInvalid(msg, param string) apiError {
	return apiError{status: http.StatusBadRequest, message: msg, typ: typeInvalidRequest, param: param, code: codeInvalidRequest}
}

// appendJSON renders e. It is hand-written so that shedding under overload
// costs no reflection.
func (e apiError) appendJSON(b []byte) []byte {
	b = append(b, `{"error":{"message":`...)
	b = appendString(b, e.message)
	b = append(b, `,"type":`...)
	b = appendString(b, e.typ)
	b = append(b, `,"param":`...)
	if e.param == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, e.param)
	}
	b = append(b, `,"code":`...)
	b = appendString(b, e.code)
	return append(b, "}}"...)
}

func writeError(w http.ResponseWriter, e apiError) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = nosniff
	if e.retryAfter > 0 {
		secs := int64((e.retryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	}
	w.WriteHeader(e.status)
	var buf [256]byte
	out := append(e.appendJSON(buf[:0]), '\n')
	_, _ = w.Write(out)
}

var (
	jsonContentType = []string{"application/json"}
	nosniff         = []string{"nosniff"}
)

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
