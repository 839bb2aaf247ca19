package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"time"
)

// eventKind is what one SSE data event is to the measurements.
type eventKind int

const (
	evToken eventKind = iota // carries output: times TTFT and ITL, counts a token
	evEmpty                  // a chunk with empty content, such as the role-only first chunk
	evUsage                  // the usage-only chunk of stream_options.include_usage
	evDone                   // data: [DONE]
	evError                  // an error object sent mid-stream
)

var (
	dataPrefix   = []byte("data:")
	doneMarker   = []byte("[DONE]")
	errorPrefix  = []byte(`{"error"`)
	errorObject  = []byte(`"object":"error"`)
	emptyChoices = []byte(`"choices":[]`)
	contentKey   = []byte(`"content":`)
	textKey      = []byte(`"text":`)
)

// classify tells an event's kind from its raw JSON without decoding it:
// decoding every chunk would cost the load generator more CPU than the
// proxy it measures. It relies on what OpenAI, vLLM and SGLang send: compact
// JSON, an "error" object first in error events, and "choices":[] only in
// the usage chunk. A chunk with neither "content" nor "text" (a tool call,
// reasoning) counts as a token: it is output all the same.
func classify(data []byte) eventKind {
	switch {
	case bytes.Equal(data, doneMarker):
		return evDone
	case bytes.HasPrefix(data, errorPrefix) || bytes.Contains(data, errorObject):
		return evError
	case bytes.Contains(data, emptyChoices):
		return evUsage
	}
	for _, key := range [][]byte{contentKey, textKey} {
		if i := bytes.Index(data, key); i >= 0 {
			v := bytes.TrimLeft(data[i+len(key):], " ")
			if bytes.HasPrefix(v, []byte(`""`)) || bytes.HasPrefix(v, []byte("null")) {
				return evEmpty
			}
			return evToken
		}
	}
	return evToken
}

// streamStats is what one stream's reader measured.
type streamStats struct {
	first  time.Time       // arrival of the first token event; zero if none
	itl    []time.Duration // gaps between consecutive token events
	tokens int64
	done   bool // [DONE] arrived
	failed bool // an error event arrived
}

func (s *streamStats) reset() {
	*s = streamStats{itl: s.itl[:0]}
}

// readStream reads server-sent events to EOF, timing each data event when
// its line arrives. Lines other than data (event:, id:, comments, blank
// separators) are ignored; each data line is one event, as every engine
// sends them. It returns nil at a clean EOF.
func readStream(br *bufio.Reader, now func() time.Time, st *streamStats) error {
	var last time.Time
	for {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, dataPrefix) {
			at := now()
			data := bytes.TrimSpace(line[len(dataPrefix):])
			switch classify(data) {
			case evToken:
				st.tokens++
				if st.first.IsZero() {
					st.first = at
				} else {
					st.itl = append(st.itl, at.Sub(last))
				}
				last = at
			case evDone:
				st.done = true
			case evError:
				st.failed = true
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: its head, classified above
			// before the buffer is reused, is all that matters.
			err = skipLine(br)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// skipLine discards the rest of a line longer than the reader's buffer.
func skipLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}
