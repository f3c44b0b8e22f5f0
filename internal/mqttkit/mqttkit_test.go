package mqttkit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/brokertest"
)

func TestParseBrokers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "tcp://a:1883", want: []string{"tcp://a:1883"}},
		{in: " tcp://a:1883 , ssl://b:8883,,", want: []string{"tcp://a:1883", "ssl://b:8883"}},
		{in: "mqtt://a:1883,mqtts://b:8883,tls://c:8883,ws://d/mqtt,wss://e/mqtt", want: []string{"mqtt://a:1883", "mqtts://b:8883", "tls://c:8883", "ws://d/mqtt", "wss://e/mqtt"}},
		{in: "", err: "no broker URL"},
		{in: " , ", err: "no broker URL"},
		{in: "http://a:80", err: `bad broker URL: "http://a:80": unsupported scheme "http" (want tcp, mqtt, ssl, tls, mqtts, ws, wss)`},
		{in: "tcp://a:1883,tcp://", err: `broker 2 of 2: bad broker URL: "tcp://" has no host`},
		{in: "tcp://a:1883,a:1883", err: `broker 2 of 2: bad broker URL: "a:1883"`},
		{in: "tcp://a b:1883", err: `bad broker URL: "tcp://a b:1883" is not a URL`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBrokers(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	require.True(t, NeedsTLS([]string{"tcp://a:1", "wss://b/mqtt"}))
	require.True(t, NeedsTLS([]string{"mqtts://a:1"}))
	require.False(t, NeedsTLS([]string{"tcp://a:1", "ws://b/mqtt", "mqtt://c:1"}))
}

func TestBackoffFastForShortOutagesCappedForLongOnes(t *testing.T) {
	now := time.Unix(0, 0)
	b := &Backoff{Now: func() time.Time { return now }}
	var upper []time.Duration // the jittered delays
	for range 40 {
		d := b.Next()
		upper = append(upper, d)
		now = now.Add(d)
	}
	// First retries are short.
	require.LessOrEqual(t, upper[0], 500*time.Millisecond)
	require.GreaterOrEqual(t, upper[0], 250*time.Millisecond)
	// During the first 2 minutes no delay exceeds FastMax.
	elapsed := time.Duration(0)
	sawLong := false
	for _, d := range upper {
		if elapsed < DefaultBackoffFastFor {
			require.LessOrEqual(t, d, DefaultBackoffFastMax, "at %s of the outage", elapsed)
		} else if d > DefaultBackoffFastMax {
			sawLong = true
		}
		require.LessOrEqual(t, d, DefaultBackoffMax)
		elapsed += d
	}
	require.True(t, sawLong, "a long outage backs off beyond FastMax")
	// Reset starts again at Min.
	b.Reset()
	require.LessOrEqual(t, b.Next(), 500*time.Millisecond)
}

func TestBackoffJitterSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		b := &Backoff{Min: 8 * time.Second, FastMax: 8 * time.Second}
		d := b.Next()
		require.GreaterOrEqual(t, d, 4*time.Second)
		require.LessOrEqual(t, d, 8*time.Second)
		seen[d/(100*time.Millisecond)] = true
	}
	require.Greater(t, len(seen), 10, "delays must spread over [d/2, d]")
}

func TestWaitHonoursContextAndTimeout(t *testing.T) {
	// A listener that accepts and never answers: CONNECT never completes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	connect := func() mqtt.Client {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + ln.Addr().String()).SetConnectTimeout(time.Minute).SetAutoReconnect(false)
		return mqtt.NewClient(o)
	}
	c := connect()
	err = Wait(context.Background(), c.Connect(), 100*time.Millisecond)
	require.ErrorIs(t, err, ErrTimeout)

	ctx, cancel := context.WithCancel(context.Background())
	c2 := connect()
	tok := c2.Connect()
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	require.ErrorIs(t, Wait(ctx, tok, 0), context.Canceled)

	// A real broker: the token completes.
	b := brokertest.StartMochi(t)
	o := AddBrokers(mqtt.NewClientOptions(), []string{"tcp://127.0.0.1:1", b.URL()}).SetConnectTimeout(2 * time.Second)
	c3 := mqtt.NewClient(o)
	require.NoError(t, Wait(context.Background(), c3.Connect(), 10*time.Second), "paho fails over to the second URL")
	c3.Disconnect(0)
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certPath, keyPath := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	require.NoError(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	junk := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(junk, []byte("not pem"), 0o600))

	c, err := TLSFiles{CAFile: certPath, CertFile: certPath, KeyFile: keyPath, ServerName: "broker"}.Config()
	require.NoError(t, err)
	require.NotNil(t, c.RootCAs)
	require.Len(t, c.Certificates, 1)
	require.Equal(t, "broker", c.ServerName)

	_, err = TLSFiles{CAFile: filepath.Join(dir, "missing.pem")}.Config()
	require.ErrorIs(t, err, ErrTLS)
	require.ErrorContains(t, err, "missing.pem")
	_, err = TLSFiles{CAFile: junk}.Config()
	require.ErrorContains(t, err, `ca_file "`+junk+`" holds no PEM certificate`)
	_, err = TLSFiles{CertFile: certPath}.Config()
	require.ErrorContains(t, err, "cert_file and key_file must be set together")
	_, err = TLSFiles{CertFile: junk, KeyFile: keyPath}.Config()
	require.True(t, errors.Is(err, ErrTLS))
	require.ErrorContains(t, err, "junk.pem")
	require.True(t, TLSFiles{}.IsZero())
}

func TestInboxBoundsEntriesAndBytes(t *testing.T) {
	in := NewInbox(3, 10)
	require.True(t, in.Offer(Message{Topic: "a", Payload: []byte("12345")}))
	require.True(t, in.Offer(Message{Topic: "b", Payload: []byte("1234")}))
	require.False(t, in.Offer(Message{Topic: "c", Payload: []byte("12")}), "over the byte cap")
	require.True(t, in.Offer(Message{Topic: "d", Payload: []byte("1")}))
	require.False(t, in.Offer(Message{Topic: "e"}), "over the entry cap")
	require.EqualValues(t, 2, in.Dropped())
	require.EqualValues(t, 10, in.Bytes())
	m, err := in.Recv(context.Background())
	require.NoError(t, err)
	require.Equal(t, "a", m.Topic)
	require.EqualValues(t, 5, in.Bytes())
	require.True(t, in.Offer(Message{Topic: "f", Payload: []byte("12345")}), "room again")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 3 {
		_, err := in.Recv(context.Background())
		require.NoError(t, err)
	}
	_, err = in.Recv(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, in.Bytes())
}
