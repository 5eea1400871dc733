package limit

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Window is a duration written as Go duration text ("24h", "90s") in YAML
// and JSON.
type Window time.Duration

// D returns the duration.
func (w Window) D() time.Duration { return time.Duration(w) }

func (w Window) String() string { return time.Duration(w).String() }

// MarshalJSON writes "24h0m0s".
func (w Window) MarshalJSON() ([]byte, error) { return json.Marshal(w.String()) }

// UnmarshalJSON reads "24h".
func (w *Window) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("window must be a string such as \"24h\"")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*w = Window(d)
	return nil
}

// MarshalYAML writes 24h0m0s.
func (w Window) MarshalYAML() (any, error) { return w.String(), nil }

// UnmarshalYAML reads 24h.
func (w *Window) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: window must be a duration such as 24h", n.Line)}}
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*w = Window(d)
	return nil
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
