// Package mqttkit is the MQTT client helpers shared by robot-agent,
// fleet-relay and fleetctl (paho.mqtt.golang, MQTT 3.1.1): broker URL lists
// (spec §8: one URL or several, comma-separated, to fail over between),
// TLS from CA/cert/key files, token waits that honour a context, a
// jittered reconnect backoff that is fast for short outages and capped
// for long ones, and a bounded inbox for paho callbacks.
package mqttkit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Schemes are the broker URL schemes accepted: tcp and mqtt (plain),
// ssl, tls and mqtts (TLS), ws and wss (MQTT over WebSocket).
var Schemes = []string{"tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss"}

// ParseBrokers splits a comma-separated broker list (SplitBrokers) and
// validates every URL. An empty list is an error.
func ParseBrokers(s string) ([]string, error) {
	out := SplitBrokers(s)
	if err := ValidateBrokers(out); err != nil {
		return nil, err
	}
	return out, nil
}

// SplitBrokers splits a comma-separated broker list without validating it;
// spaces around the commas and empty items are dropped.
func SplitBrokers(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ValidateBrokers checks every URL of a broker list (at least one); the
// error names the bad URL and its position.
func ValidateBrokers(urls []string) error {
	if len(urls) == 0 {
		return ErrNoBroker
	}
	for i, u := range urls {
		if err := ValidateBroker(u); err != nil {
			if len(urls) > 1 {
				return fmt.Errorf("broker %d of %d: %w", i+1, len(urls), err)
			}
			return err
		}
	}
	return nil
}

// ValidateBroker checks one broker URL: a known scheme and a host.
func ValidateBroker(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w: %q is not a URL: %v", ErrBadBroker, s, errors.Unwrap(err))
	}
	if !isScheme(u.Scheme) {
		return fmt.Errorf("%w: %q: unsupported scheme %q (want %s)", ErrBadBroker, s, u.Scheme, strings.Join(Schemes, ", "))
	}
	if u.Host == "" {
		return fmt.Errorf("%w: %q has no host", ErrBadBroker, s)
	}
	return nil
}

func isScheme(s string) bool {
	for _, k := range Schemes {
		if s == k {
			return true
		}
	}
	return false
}

// NeedsTLS reports whether any URL of the list uses TLS (ssl, tls, mqtts, wss).
func NeedsTLS(urls []string) bool {
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil {
			switch u.Scheme {
			case "ssl", "tls", "mqtts", "wss":
				return true
			}
		}
	}
	return false
}

// AddBrokers adds every URL to paho's options (paho tries them in order on
// each connect).
func AddBrokers(o *mqtt.ClientOptions, urls []string) *mqtt.ClientOptions {
	for _, u := range urls {
		o.AddBroker(u)
	}
	return o
}

// TLSFiles configures TLS from files. The zero value means the system roots
// and no client certificate.
type TLSFiles struct {
	// CAFile verifies the broker; empty means the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate (mutual TLS); both or neither.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string
	// InsecureSkipVerify disables verification (tests only).
	InsecureSkipVerify bool
}

// IsZero reports whether nothing is configured.
func (t TLSFiles) IsZero() bool { return t == TLSFiles{} }

// Config reads the files and returns the client TLS config (TLS 1.2 or
// later). Errors name the file that is wrong.
func (t TLSFiles) Config() (*tls.Config, error) {
	c := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in, for tests
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: ca_file: %v", ErrTLS, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: ca_file %q holds no PEM certificate", ErrTLS, t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("%w: cert_file and key_file must be set together", ErrTLS)
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: cert_file %q / key_file %q: %v", ErrTLS, t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Wait waits for a paho token, at most timeout (zero: no limit but ctx).
// It returns the token's error, ErrTimeout, or ctx's error.
func Wait(ctx context.Context, t mqtt.Token, timeout time.Duration) error {
	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-t.Done():
		return t.Error()
	case <-expired:
		return ErrTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}
