// Package controlplane runs a local control plane: Start (apiserver.go) brings up etcd,
// kube-apiserver and, when asked, kube-controller-manager on loopback — the one launcher of the
// e2e suite, of charts/'s tests and of the benchmarks (bench/benchctl run). The bench gives its
// own apiserver flags and environment through Options (admission plugins and APF off, GOGC) and
// forces a relist with RelistAPIServer (a restart over a compacted etcd). The helpers here write
// an admin token, the token file and service-account key the apiserver reads, and a kubeconfig.
package controlplane

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// NewToken returns a random bearer token.
func NewToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// WriteSecrets writes DIR/tokens.csv (--token-auth-file: token for USER in system:masters) and
// DIR/sa.key (--service-account-key-file and --service-account-signing-key-file).
func WriteSecrets(dir, user, token string) error {
	line := fmt.Sprintf("%s,%s,%s-uid,\"system:masters\"\n", token, user, user)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(line), 0o600); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// WriteKubeconfig writes a kubeconfig whose current context NAME reaches SERVER (trusting the CA
// file) as AUTHINFO with the bearer token.
func WriteKubeconfig(path, name, authInfo, server, caFile, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos[authInfo] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: authInfo}
	cfg.CurrentContext = name
	return clientcmd.WriteToFile(*cfg, path)
}
