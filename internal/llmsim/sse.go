package llmsim

import (
	"encoding/json"
	"errors"
	"net/http"
)

// errStreamCut reports that the FailMidStream fault ended a stream.
var errStreamCut = errors.New("llmsim: stream cut by fault")

// sseWriter writes server-sent events, flushing each one so that the
// client sees every token when it is generated.
type sseWriter struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	sent      int // data events sent, [DONE] excluded
	failAfter int // cut the stream after this many events; 0 = never
	buf       []byte
}

func newSSEWriter(w http.ResponseWriter, failAfter int) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w), failAfter: failAfter}
}

// open sends the response headers at once, before the first token, as a
// streaming vLLM response does.
func (e *sseWriter) open() error {
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	e.w.WriteHeader(http.StatusOK)
	return e.rc.Flush()
}

// send writes v as one "data: <json>" event. It returns errStreamCut once
// failAfter events have been sent.
func (e *sseWriter) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := e.write(b); err != nil {
		return err
	}
	e.sent++
	if e.failAfter > 0 && e.sent >= e.failAfter {
		return errStreamCut
	}
	return nil
}

// done writes the closing "data: [DONE]" event.
func (e *sseWriter) done() error { return e.write([]byte("[DONE]")) }

func (e *sseWriter) write(data []byte) error {
	e.buf = append(append(append(e.buf[:0], "data: "...), data...), "\n\n"...)
	if _, err := e.w.Write(e.buf); err != nil {
		return err
	}
	return e.rc.Flush()
}

// abort drops the connection without ending the response, so the client
// sees a truncated stream, as when an engine crashes. Hijacking closes the
// TCP connection on HTTP/1; where that is unsupported (HTTP/2), the
// http.ErrAbortHandler panic makes net/http reset the stream without
// logging.
func (e *sseWriter) abort() {
	conn, _, err := e.rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
