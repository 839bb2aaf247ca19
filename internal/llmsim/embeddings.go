package llmsim

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"
	"time"
)

// embeddingDim is the length of every simulated embedding: small, because
// only the shape and determinism matter to tests.
const embeddingDim = 8

// handleEmbeddings answers POST /v1/embeddings. It takes a running slot and
// pays TTFT (a prefill, without prefix caching) like a pooling model.
func (s *Sim) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	var req embeddingRequest
	if e := s.decode(w, r, &req); e != nil {
		s.reject(w, e)
		return
	}
	if !req.Input.set || len(req.Input.texts) == 0 {
		s.reject(w, badRequest("input", "input must be a non-empty string or array"))
		return
	}
	b64 := false
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		s.reject(w, badRequest("encoding_format", `encoding_format must be "float" or "base64"`))
		return
	}
	f := s.Faults()
	t := s.admit(w, r, f)
	if t == nil {
		return
	}
	defer t.release()
	if err := t.wait(r.Context()); err != nil {
		s.stats.cancelled.Add(1)
		return
	}
	if err := sleepUntil(r.Context(), time.Now().Add(f.scale(s.cfg.TTFT))); err != nil {
		s.stats.cancelled.Add(1)
		return
	}
	list := embeddingList{Object: "list", Model: req.Model, Data: make([]embedding, len(req.Input.texts))}
	for i, text := range req.Input.texts {
		var vec any = embed(text)
		if b64 {
			vec = encodeBase64(embed(text))
		}
		list.Data[i] = embedding{Object: "embedding", Index: i, Embedding: vec}
		list.Usage.PromptTokens += promptTokens(text)
	}
	list.Usage.TotalTokens = list.Usage.PromptTokens
	s.stats.promptTokens.Add(int64(list.Usage.PromptTokens))
	writeJSON(w, http.StatusOK, list)
	s.stats.completed.Add(1)
}

// embed derives a unit vector from FNV hashes of text, so equal texts get
// equal vectors on every simulator, whatever its seed.
func embed(text string) []float32 {
	vec := make([]float32, embeddingDim)
	h := fnvString(fnvOffset64, text)
	var norm float64
	for i := range vec {
		h = fnvUint64(h, uint64(i))
		x := float64(h>>11)/(1<<53)*2 - 1 // uniform in [-1, 1)
		vec[i] = float32(x)
		norm += x * x
	}
	if norm == 0 {
		vec[0], norm = 1, 1
	}
	scale := 1 / math.Sqrt(norm)
	for i := range vec {
		vec[i] = float32(float64(vec[i]) * scale)
	}
	return vec
}

// encodeBase64 packs vec as little-endian float32s, OpenAI's base64 format.
func encodeBase64(vec []float32) string {
	b := make([]byte, 4*len(vec))
	for i, x := range vec {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}
