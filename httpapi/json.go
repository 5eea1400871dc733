package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"seckill"
)

// maxJSONDepth bounds the nesting of a request body; no body of the API
// nests more than three levels.
const maxJSONDepth = 32

// BindJSON decodes a JSON body of at most limit bytes into v. An oversized
// body is too_large; anything that is not one JSON object of the right
// shape is invalid, and so is an object naming one key twice (at any depth;
// keys that differ only in letter case count as the same key, since the
// decoder would match both to one field); never a 5xx. Unknown fields are
// ignored (the public contract allows clients to send more).
func BindJSON(c echo.Context, limit int64, v any) error {
	return bindJSON(c, limit, v, false)
}

// BindJSONStrict is BindJSON that also refuses fields v does not have: the
// admin API's bodies, where a misspelt switch must not pass as "no change".
func BindJSONStrict(c echo.Context, limit int64, v any) error {
	return bindJSON(c, limit, v, true)
}

func bindJSON(c echo.Context, limit int64, v any, strict bool) error {
	raw, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return seckill.Errorf(seckill.ETooLarge, "request body over %d bytes", limit)
		}
		return seckill.Errorf(seckill.EInvalid, "the request body could not be read to its end")
	}
	return DecodeJSON(raw, v, strict)
}

// DecodeJSON decodes one JSON object from raw into v under the rules of
// BindJSON (strict: BindJSONStrict). It is the one JSON request decoder of
// seckill's HTTP APIs.
func DecodeJSON(raw []byte, v any, strict bool) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return seckill.Errorf(seckill.EInvalid, "request body is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return seckill.Errorf(seckill.EInvalid, "%s", jsonDetail(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return seckill.Errorf(seckill.EInvalid, "trailing data after the JSON object")
	}
	if key, ok := duplicateKey(raw); ok {
		return seckill.Errorf(seckill.EInvalid, "key %q appears twice in one object", key)
	}
	return nil
}

// duplicateKey reports the first key named twice in one object of a
// well-formed JSON document (case-insensitively), or one nested deeper
// than maxJSONDepth (reported as its key).
func duplicateKey(raw []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	key, dup, err := walkJSON(dec, 0)
	if err != nil {
		return "", false // Decode above already judged the syntax
	}
	return key, dup
}

func walkJSON(dec *json.Decoder, depth int) (string, bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", false, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return "", false, nil
	}
	if depth >= maxJSONDepth {
		return "(nesting)", true, nil
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return "", false, err
			}
			k, _ := kt.(string)
			fold := strings.ToLower(k)
			if seen[fold] {
				return k, true, nil
			}
			seen[fold] = true
			if key, dup, err := walkJSON(dec, depth+1); dup || err != nil {
				return key, dup, err
			}
		}
	case '[':
		for dec.More() {
			if key, dup, err := walkJSON(dec, depth+1); dup || err != nil {
				return key, dup, err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return "", false, err
}

// jsonDetail says what is wrong with a JSON body in the client's terms:
// JSON field names and JSON types, never the decoder's own message, which
// names Go types ("Go struct field reserveRequest.item_id of type int64").
func jsonDetail(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	var pe *time.ParseError
	switch {
	case errors.As(err, &te):
		if te.Field == "" {
			return "the body must be a JSON object"
		}
		return fmt.Sprintf("field %q must be %s", te.Field, jsonKind(te.Type))
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case errors.As(err, &pe):
		return "a time is not in RFC 3339 form (2006-01-02T15:04:05Z)"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: the body ends too early"
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + name
	}
	return "malformed JSON: a value has the wrong type or form"
}

// jsonKind names the JSON type a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "of another type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "of another type"
}
