package llmsim

import (
	"encoding/json"
	"errors"
	"net/http"
)

// Sentinels of the package. Validation failures are *FieldError values that
// unwrap to ErrInvalidConfig or ErrInvalidFaults.
var (
	// ErrInvalidConfig is wrapped by every Config.Validate failure.
	ErrInvalidConfig = errors.New("llmsim: invalid config")
	// ErrInvalidFaults is wrapped by every Faults.Validate failure.
	ErrInvalidFaults = errors.New("llmsim: invalid faults")

	// errQueueFull reports that MaxQueue requests are already waiting.
	errQueueFull = errors.New("llmsim: waiting queue is full")
)

// FieldError names the configuration field that is wrong and why. Its
// message reads "llmsim: <field>: <reason>" so a CLI can print it as is.
type FieldError struct {
	Field  string // kebab-case for Config (as the CLI flags), snake_case for Faults (as the JSON)
	Reason string
	kind   error
}

func (e *FieldError) Error() string { return "llmsim: " + e.Field + ": " + e.Reason }

// Unwrap returns ErrInvalidConfig or ErrInvalidFaults.
func (e *FieldError) Unwrap() error { return e.kind }

// apiError is an OpenAI error response: the HTTP status plus the body
// {"error":{"message","type","param","code"}}. An empty Param or Code is
// encoded as null, as OpenAI does.
type apiError struct {
	status  int
	message string
	typ     string
	param   string
	code    string
}

// OpenAI error types used below.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
)

func badRequest(param, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, message: msg, typ: typeInvalidRequest, param: param, code: typeInvalidRequest}
}

func modelNotFound(model string) *apiError {
	return &apiError{
		status:  http.StatusNotFound,
		message: "The model `" + model + "` does not exist.",
		typ:     typeInvalidRequest,
		param:   "model",
		code:    "model_not_found",
	}
}

var (
	errAPIInjected = &apiError{status: http.StatusInternalServerError, message: "injected fault: internal error", typ: typeServer, code: "internal_error"}
	errAPIQueue    = &apiError{status: http.StatusServiceUnavailable, message: "waiting queue is full", typ: typeServer, code: "queue_full"}
	errAPITooLarge = &apiError{status: http.StatusRequestEntityTooLarge, message: "request body is too large", typ: typeInvalidRequest, code: "request_too_large"}
	errAPIHealth   = &apiError{status: http.StatusServiceUnavailable, message: "injected fault: unhealthy", typ: typeServer, code: "unhealthy"}
)

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// write sends e as the whole response.
func (e *apiError) write(w http.ResponseWriter) {
	body := struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}{}
	body.Error.Message = e.message
	body.Error.Type = e.typ
	body.Error.Param = nullable(e.param)
	body.Error.Code = nullable(e.code)
	writeJSON(w, e.status, body)
}

// writeJSON sends v with the given status. Encoding errors are ignored: the
// values are the package's own types, and a failed write means the client
// went away.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
