package dynconfig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Signing. Every version is signed by the pusher with Ed25519 over its
// version number and content (signedMessage). The pusher holds the private
// key; edges hold only public keys, so an edge (or anyone who can write to
// ZooKeeper) cannot make a version the edges accept. Edges accept a list
// of public keys, so a key is rotated by adding the new public key to every
// edge, pushing with the new private key, then removing the old public key.
//
// Key files are one line of standard base64: the 32-byte seed for a
// private key, the 32-byte key for a public one (`seckill config keygen`).

// signingLabel separates these signatures from any other use of the key.
const signingLabel = "seckill limits v1"

// ErrUnsigned is the error of a version without a signature.
var ErrUnsigned = errors.New("version is not signed")

// GenerateKey makes a key pair and returns both encoded as key files hold
// them.
func GenerateKey() (public, private string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	return base64.StdEncoding.EncodeToString(pub), base64.StdEncoding.EncodeToString(priv.Seed()), nil
}

// ParsePrivateKey reads a private key file's content.
func ParsePrivateKey(s string) (ed25519.PrivateKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.SeedSize {
		return nil, errors.New("not an Ed25519 private key (one line of base64 holding 32 bytes: make one with `seckill config keygen`)")
	}
	return ed25519.NewKeyFromSeed(b), nil
}

// ParsePublicKeys reads a comma-separated list of public keys (each one
// line of base64 holding 32 bytes).
func ParsePublicKeys(s string) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(part)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("public key %d: not an Ed25519 public key (base64 of 32 bytes: the .pub file of `seckill config keygen`)", i+1)
		}
		out = append(out, ed25519.PublicKey(b))
	}
	return out, nil
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// signedMessage is what a signature covers: the label, the version, the
// rollback source, who pushed and when, and the configuration (compacted
// JSON), separated by zero bytes.
func signedMessage(r Record) ([]byte, error) {
	var cfg bytes.Buffer
	if err := json.Compact(&cfg, r.Config); err != nil {
		return nil, fmt.Errorf("compacting the configuration: %w", err)
	}
	var m bytes.Buffer
	for _, part := range []string{
		signingLabel,
		strconv.FormatInt(int64(r.Version), 10),
		strconv.FormatInt(int64(r.RollbackOf), 10),
		r.PushedBy,
		r.PushedAt.UTC().Format(time.RFC3339Nano),
	} {
		m.WriteString(part)
		m.WriteByte(0)
	}
	m.Write(cfg.Bytes())
	return m.Bytes(), nil
}

// Sign sets r's KeyID and Signature.
func Sign(r *Record, priv ed25519.PrivateKey) error {
	msg, err := signedMessage(*r)
	if err != nil {
		return err
	}
	r.KeyID = KeyID(priv.Public().(ed25519.PublicKey))
	r.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, msg))
	return nil
}

// Verify checks r's signature against keys (any one may have made it).
func Verify(r Record, keys []ed25519.PublicKey) error {
	if r.Signature == "" {
		return ErrUnsigned
	}
	if len(keys) == 0 {
		return errors.New("no public key to check the signature with (--config-public-keys)")
	}
	sig, err := base64.StdEncoding.DecodeString(r.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("signature is not base64 of 64 bytes")
	}
	msg, err := signedMessage(r)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return nil
		}
	}
	return fmt.Errorf("bad signature: no trusted public key verifies it (key id %q)", r.KeyID)
}
