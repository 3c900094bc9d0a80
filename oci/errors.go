package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error codes of the OCI distribution specification (and Docker's
// extensions) that the proxy emits.
const (
	CodeBlobUnknown         = "BLOB_UNKNOWN"
	CodeManifestUnknown     = "MANIFEST_UNKNOWN"
	CodeManifestInvalid     = "MANIFEST_INVALID"
	CodeNameUnknown         = "NAME_UNKNOWN"
	CodeNameInvalid         = "NAME_INVALID"
	CodeDigestInvalid       = "DIGEST_INVALID"
	CodeRangeInvalid        = "RANGE_INVALID"
	CodeUnauthorized        = "UNAUTHORIZED"
	CodeDenied              = "DENIED"
	CodeUnsupported         = "UNSUPPORTED"
	CodeTooManyRequests     = "TOOMANYREQUESTS"
	CodeUnavailable         = "UNAVAILABLE"
	CodeUnknown             = "UNKNOWN"
	CodeSizeInvalid         = "SIZE_INVALID"
	CodeTagInvalid          = "TAG_INVALID"
	CodePaginationNumberInv = "PAGINATION_NUMBER_INVALID"
)

// Error is an error that knows how it is presented to an OCI client: the
// HTTP status, the error code and a message. Layers wrap their causes in an
// Error so the HTTP layer needs only errors.As to answer correctly.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is copied into a Retry-After header when set (429, 503).
	RetryAfter string
	// Challenge is sent as WWW-Authenticate with a 401, so clients know
	// to send credentials.
	Challenge string
	// Err is the underlying cause, logged but never sent to clients.
	Err error
}

// Error implements error; it includes the cause for logs.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether retrying later may succeed: upstream
// unavailability, gateway errors and rate limiting.
func (e *Error) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Errorf builds an Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap builds an Error around a cause.
func Wrap(status int, code string, cause error, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...), Err: cause}
}

// Sentinel-like constructors for the common cases.
var (
	// ErrBlobUnknown is the cause behind blob 404s.
	ErrBlobUnknown = errors.New("blob unknown")
	// ErrManifestUnknown is the cause behind manifest 404s.
	ErrManifestUnknown = errors.New("manifest unknown")
)

// IsTemporary reports whether err carries an Error that is Temporary, or is
// a network-level failure wrapped as such.
func IsTemporary(err error) bool {
	var oe *Error
	if errors.As(err, &oe) {
		return oe.Temporary()
	}
	return false
}

// StatusOf returns the HTTP status of the Error in err's chain, or 500.
func StatusOf(err error) int {
	var oe *Error
	if errors.As(err, &oe) {
		return oe.Status
	}
	return http.StatusInternalServerError
}

// CodeOf returns the code of the Error in err's chain, or UNKNOWN.
func CodeOf(err error) string {
	var oe *Error
	if errors.As(err, &oe) {
		return oe.Code
	}
	return CodeUnknown
}

// Envelope is the JSON body of an OCI error response.
type Envelope struct {
	Errors []EnvelopeError `json:"errors"`
}

// EnvelopeError is one entry of an Envelope.
type EnvelopeError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// EnvelopeFor returns the status and JSON body that present err to a client.
// Errors that are not *Error become 500 UNKNOWN without leaking the cause.
func EnvelopeFor(err error) (int, []byte) {
	var oe *Error
	if !errors.As(err, &oe) {
		oe = &Error{Status: http.StatusInternalServerError, Code: CodeUnknown, Message: "internal error"}
	}
	body, err := json.Marshal(Envelope{Errors: []EnvelopeError{{Code: oe.Code, Message: oe.Message}}})
	if err != nil {
		// Two strings always marshal; should that ever change, the client
		// still gets a valid envelope.
		return http.StatusInternalServerError, []byte(internalErrorBody)
	}
	return oe.Status, body
}

// internalErrorBody is the envelope of an error that cannot be presented.
const internalErrorBody = `{"errors":[{"code":"` + CodeUnknown + `","message":"internal error"}]}`
