package completion

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/completion/internal/redistest"
)

// tlsPKI is a throw-away certificate authority with a server certificate
// for localhost / 127.0.0.1 / ::1 and a client certificate, as PEM files in a
// t.TempDir().
type tlsPKI struct {
	pool                  *x509.CertPool // holds the CA
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
	client                tls.Certificate
}

func newTLSPKI(t testing.TB) *tlsPKI {
	t.Helper()
	dir := t.TempDir()
	p := &tlsPKI{pool: x509.NewCertPool()}

	caKey, caDER := tlsIssue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "completion test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	p.pool.AddCert(ca)
	p.caFile = tlsWritePEM(t, dir, "ca.crt", "CERTIFICATE", caDER)

	srvKey, srvDER := tlsIssue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	p.serverCert = tlsWritePEM(t, dir, "server.crt", "CERTIFICATE", srvDER)
	p.serverKey = tlsWritePEM(t, dir, "server.key", "PRIVATE KEY", tlsMarshalKey(t, srvKey))

	cliKey, cliDER := tlsIssue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "completion-consumer"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	p.clientCert = tlsWritePEM(t, dir, "client.crt", "CERTIFICATE", cliDER)
	p.clientKey = tlsWritePEM(t, dir, "client.key", "PRIVATE KEY", tlsMarshalKey(t, cliKey))
	p.client, err = tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	require.NoError(t, err)
	return p
}

// tlsIssue creates a key and a certificate from tmpl, signed by parent (self-
// signed when parent is nil), valid from an hour ago for a day.
func tlsIssue(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	require.NoError(t, err)
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	return key, der
}

func tlsMarshalKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return der
}

func tlsWritePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

// tlsConfig is what an application passes as redis.Options.TLSConfig: trust
// the CA, check the server's name, and present a client certificate when
// withCert is set.
func (p *tlsPKI) tlsConfig(withCert bool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool, ServerName: "localhost"}
	if withCert {
		c.Certificates = []tls.Certificate{p.client}
	}
	return c
}

// tlsClient returns a go-redis client with TLS settings cfg (nil: plain
// TCP), closed in t.Cleanup.
func tlsClient(t testing.TB, addr string, cfg *tls.Config) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: cfg})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startTLSRedis spawns a redis-server that listens only on TLS, on
// 127.0.0.1, with the PKI's server certificate, requiring client
// certificates when authClients is set, and returns its address. The
// server is stopped and reaped in t.Cleanup.
//
// redistest.Start cannot do this: it always passes --port and waits for a
// plain-TCP PING on it (see the report), so this file spawns the server
// itself, the same way: exec.Command, no shell, files in a t.TempDir(),
// stopped by its own pid.
//
// Without a redis-server binary, or with one built without TLS, the test is
// skipped, or fails when CI is set.
func startTLSRedis(t *testing.T, pki *tlsPKI, authClients bool) string {
	t.Helper()
	bin, err := redistest.Binary()
	if err != nil {
		tlsSkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	auth := "no"
	if authClients {
		auth = "yes"
	}
	var lastErr error
	for range 5 {
		port, err := tlsPickPort()
		require.NoError(t, err)
		args := []string{
			"--port", "0", // no plain-TCP listener at all
			"--tls-port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--tls-cert-file", pki.serverCert,
			"--tls-key-file", pki.serverKey,
			"--tls-ca-cert-file", pki.caFile,
			"--tls-auth-clients", auth,
			"--dir", dir,
			"--logfile", filepath.Join(dir, "redis.log"),
			"--save", "",
			"--appendonly", "no",
			"--daemonize", "no",
		}
		addr, err := spawnTLSRedis(t, bin, dir, args, port, pki)
		if err == nil {
			return addr
		}
		lastErr = err
		if errors.Is(err, errNoTLS) {
			tlsSkipOrFail(t, "%v: this redis-server was built without TLS support (BUILD_TLS=yes); "+
				"install a build with TLS (the Debian/Ubuntu redis-server package has it)", err)
		}
		if !errors.Is(err, errTLSPortTaken) {
			break
		}
	}
	t.Fatalf("start a TLS-only redis-server: %v", lastErr)
	return ""
}

var (
	errNoTLS        = errors.New("redis-server does not accept --tls-port")
	errTLSPortTaken = errors.New("port already in use")
)

func tlsSkipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (CI must run the TLS tests)", args...)
	}
	t.Skipf(format, args...)
}

// spawnTLSRedis starts one redis-server process and waits up to 10 s for it
// to answer PING over TLS. A TLS handshake that verifies against the test
// CA proves the answer comes from this process.
func spawnTLSRedis(t *testing.T, bin, dir string, args []string, port int, pki *tlsPKI) (string, error) {
	out, err := os.OpenFile(filepath.Join(dir, "redis.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = tlsKillWithParent()
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logs := func() string {
		a, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
		b, _ := os.ReadFile(filepath.Join(dir, "redis.out"))
		return string(a) + string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-done:
			l := logs()
			switch {
			case strings.Contains(l, "Address already in use"):
				return "", fmt.Errorf("%w: %d", errTLSPortTaken, port)
			case strings.Contains(l, "tls-port") && strings.Contains(l, "Bad directive"), // built without TLS
				strings.Contains(l, "connection listener of tls"): // 7.2+: TLS built as a module that is not loaded
				return "", fmt.Errorf("%w:\n%s", errNoTLS, l)
			}
			return "", fmt.Errorf("redis-server exited during startup (%s):\n%s", cmd.ProcessState, l)
		}
		err := tlsPing(addr, pki.tlsConfig(true))
		if err == nil {
			t.Cleanup(stop)
			return addr, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("no PONG over TLS on %s within 10s (last error: %v):\n%s", addr, err, logs())
		}
	}
}

// tlsPing sends PING over a TLS connection and expects +PONG.
func tlsPing(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// tlsPickPort returns a loopback port that was free a moment ago.
func tlsPickPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tlsKillWithParent asks the kernel to SIGKILL the server if the test binary
// dies without running its cleanups. The field exists only on Linux; it is
// set by name so that this file builds everywhere.
func tlsKillWithParent() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL).Convert(f.Type()))
	}
	return attr
}

// TestTLSConsumerAndPublisher runs a publisher and a consumer against a
// redis-server that listens only on TLS, with a client that verifies the
// server against the test CA, and, with --tls-auth-clients yes, presents a
// client certificate. Everything goes over TLS, the dedicated blocking-read
// connection and the CLIENT UNBLOCK at shutdown included.
func TestTLSConsumerAndPublisher(t *testing.T) {
	pki := newTLSPKI(t)
	for _, authClients := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls-auth-clients=%v", authClients), func(t *testing.T) {
			ctx := context.Background()
			addr := startTLSRedis(t, pki, authClients)
			rdb := tlsClient(t, addr, pki.tlsConfig(authClients))
			prdb := tlsClient(t, addr, pki.tlsConfig(authClients))

			cfg := testConfig("tls:{stream}")
			cfg.Block = 30 * time.Second // shutdown must interrupt it
			h := newRecorder()
			c := newTestConsumer(t, rdb, registryWith(2), h, cfg)
			stop := startConsumer(t, c)

			_, err := Publish(ctx, prdb, cfg.Stream, Message{OperationID: "op-1", TaskID: "t-1", Success: true, Result: StringResult("done")})
			require.NoError(t, err)
			require.NoError(t, prdb.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, Values: []any{DataField, "not json"}}).Err())
			_, err = Publish(ctx, prdb, cfg.Stream, Message{OperationID: "op-2", TaskID: "t-2", Success: false, Error: "boom"})
			require.NoError(t, err)

			got := map[string]Completion{} // handlers run in parallel: any order
			for range 2 {
				c := h.next(t)
				got[c.Message.OperationID] = c
			}
			require.Contains(t, got, "op-1")
			require.Contains(t, got, "op-2")
			assert.JSONEq(t, `"done"`, string(got["op-1"].Message.Result))
			assert.Equal(t, "boom", got["op-2"].Message.Error)
			eventually(t, func() bool {
				n, err := rdb.XLen(ctx, c.Config().DeadLetterStream).Result()
				return err == nil && n == 1
			}, "malformed entry not dead-lettered")
			eventually(t, func() bool {
				n, err := rdb.XPending(ctx, cfg.Stream, cfg.Group).Result()
				return err == nil && n.Count == 0
			}, "entries still pending")

			eventually(t, func() bool { return aclBlockedReads(t, rdb) >= 1 }, "no blocked XREADGROUP")
			start := time.Now()
			require.NoError(t, stop())
			assert.Less(t, time.Since(start), 5*time.Second, "shutdown waited for the 30s blocked read")
			assert.Zero(t, c.Stats().RedisErrors, "last error %q", c.Stats().LastError)
		})
	}
}

// TestTLSMisconfiguredClientFailsClearly: a client that does not trust the
// server's CA, expects another name, offers no certificate where one is
// required, or speaks plain TCP gets an error at once, never a hang. The
// TLS errors name the problem (x509 ...).
func TestTLSMisconfiguredClientFailsClearly(t *testing.T) {
	pki := newTLSPKI(t)
	addr := startTLSRedis(t, pki, false)
	authAddr := startTLSRedis(t, pki, true)
	msg := Message{OperationID: "op-1", TaskID: "t-1", Success: true}

	publishErr := func(t *testing.T, addr string, cfg *tls.Config) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		start := time.Now()
		_, err := Publish(ctx, tlsClient(t, addr, cfg), "tls:{bad}", msg)
		require.Error(t, err)
		t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "Publish hung until its deadline")
		assert.Less(t, time.Since(start), 10*time.Second)
		return err
	}

	t.Run("unknown CA", func(t *testing.T) {
		cfg := pki.tlsConfig(false)
		cfg.RootCAs = nil // system roots: the test CA is not among them
		err := publishErr(t, addr, cfg)
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, err, &unknown)
		var verr *tls.CertificateVerificationError
		require.ErrorAs(t, err, &verr)
		assert.Contains(t, err.Error(), "x509: certificate signed by unknown authority")
	})
	t.Run("wrong server name", func(t *testing.T) {
		cfg := pki.tlsConfig(false)
		cfg.ServerName = "redis.example"
		err := publishErr(t, addr, cfg)
		var host x509.HostnameError
		require.ErrorAs(t, err, &host)
		assert.Contains(t, err.Error(), "x509: certificate is valid for localhost")
	})
	t.Run("server name from the address", func(t *testing.T) {
		// Without ServerName, crypto/tls checks the address's host, here
		// 127.0.0.1, against the certificate's IP SANs.
		cfg := pki.tlsConfig(false)
		cfg.ServerName = ""
		_, err := Publish(context.Background(), tlsClient(t, addr, cfg), "tls:{ok}", msg)
		require.NoError(t, err)
	})
	t.Run("no client certificate where one is required", func(t *testing.T) {
		err := publishErr(t, authAddr, pki.tlsConfig(false))
		// TLS 1.3 (what Go and OpenSSL 3 agree on): "certificate required".
		assert.Regexp(t, `tls: (certificate required|bad certificate|handshake failure)`, err.Error())
	})
	t.Run("plain TCP to the TLS port", func(t *testing.T) {
		publishErr(t, addr, nil)
	})
	t.Run("consumer with an unknown CA", func(t *testing.T) {
		// A TLS failure is a connection error to the consumer: it keeps
		// retrying (the server's certificate may be fixed), reports
		// StateDegraded, and Stats.LastError says why.
		cfg := pki.tlsConfig(false)
		cfg.RootCAs = nil
		c := newTestConsumer(t, tlsClient(t, addr, cfg), registryWith(1), newRecorder(), testConfig("tls:{consumer}"))
		stop := startConsumer(t, c)
		eventually(t, func() bool {
			return c.State() == StateDegraded && strings.Contains(c.Stats().LastError, "x509: certificate signed by unknown authority")
		}, "no x509 error reported: state %v, last error %q", c.State(), c.Stats().LastError)
		start := time.Now()
		require.NoError(t, stop())
		assert.Less(t, time.Since(start), 5*time.Second)
	})
}
