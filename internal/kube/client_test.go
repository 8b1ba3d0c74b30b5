package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// With Endpoint alone, the tls files are used: the server's CA is trusted and the client
// certificate is presented (what k8sdiscovery's `tls CERT KEY CACERT` sets).
func TestNewClientTLSFiles(t *testing.T) {
	var sawClientCert bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawClientCert = r.TLS != nil && len(r.TLS.PeerCertificates) > 0
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.0"}`))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()

	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := write("ca.crt", "CERTIFICATE", srv.Certificate().Raw)
	// The test server's own pair serves as the client's certificate here.
	cert := srv.TLS.Certificates[0]
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	crt := write("c.crt", "CERTIFICATE", cert.Certificate[0])
	keyFile := write("c.key", "PRIVATE KEY", key)

	client, err := NewClient(ClientConfig{Endpoint: srv.URL, CAFile: ca, CertFile: crt, KeyFile: keyFile, QPS: 50, Burst: 100})
	if err != nil {
		t.Fatal(err)
	}
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	if v.GitVersion != "v1.37.0" || !sawClientCert {
		t.Errorf("version %q, client certificate presented %v", v.GitVersion, sawClientCert)
	}

	untrusting, err := NewClient(ClientConfig{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.Discovery().RESTClient().Get().AbsPath("/version").DoRaw(context.Background()); err == nil {
		t.Error("without the CA file the server's certificate was trusted")
	}
}
