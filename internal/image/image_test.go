package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

const fakeBinary = "#!/bin/false\nnot really coredns\n"

// writeFake builds an image from a small fake binary and returns the tarball's path.
func writeFake(t *testing.T, o Options) (string, Result) {
	t.Helper()
	dir := t.TempDir()
	if o.Binary == "" {
		o.Binary = filepath.Join(dir, "coredns")
		if err := os.WriteFile(o.Binary, []byte(fakeBinary), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if o.Tag == "" {
		o.Tag = "clusterdns/coredns:v0.0.0-test"
	}
	out := filepath.Join(dir, "coredns.image.tar")
	res, err := WriteFile(out, o)
	if err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	return out, res
}

// readTar returns every regular file of a tarball by name, and the names in order.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header, []string) {
	t.Helper()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		names = append(names, h.Name)
		hdrs[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
	return files, hdrs, names
}

// TestDockerLoadShape reads the tarball back the way `docker load` does (manifest.json) and checks
// the config and the layer.
func TestDockerLoadShape(t *testing.T) {
	created := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	path, res := writeFake(t, Options{Created: created, Labels: map[string]string{"org.opencontainers.image.version": "v0.0.0-test"}})
	if res.Platform != "linux/amd64" {
		t.Errorf("platform %q, want linux/amd64 for a file that is not ELF", res.Platform)
	}

	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatalf("tarball.ImageFromPath: %v", err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/coredns"}) {
		t.Errorf("entrypoint %q, want [/coredns]", c.Entrypoint)
	}
	if !slices.Equal(c.Cmd, []string{"-conf", "/etc/coredns/Corefile"}) {
		t.Errorf("cmd %q", c.Cmd)
	}
	for _, p := range []string{"53/udp", "53/tcp", "9153/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if c.Labels["org.opencontainers.image.version"] != "v0.0.0-test" {
		t.Errorf("labels %v", c.Labels)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(created) {
		t.Errorf("os/arch/created %s/%s/%v", cf.OS, cf.Architecture, cf.Created)
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files, hdrs, _ := readTar(t, rc)
	h := hdrs["coredns"]
	if h == nil {
		t.Fatalf("layer has no /coredns: %v", hdrs)
	}
	if h.Typeflag != tar.TypeReg || h.FileInfo().Mode().Perm() != 0o755 || h.Uid != 0 || h.Gid != 0 {
		t.Errorf("/coredns: type %c mode %v uid %d gid %d, want a regular file 0755 owned by root", h.Typeflag, h.FileInfo().Mode(), h.Uid, h.Gid)
	}
	if string(files["coredns"]) != fakeBinary {
		t.Errorf("/coredns holds %q, want the binary", files["coredns"])
	}
	if !h.ModTime.Equal(created) {
		t.Errorf("mtime %v, want %v", h.ModTime, created)
	}
	if !strings.Contains(string(files["etc/passwd"]), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd: %q", files["etc/passwd"])
	}
	if _, ok := hdrs["etc/ssl/certs/ca-certificates.crt"]; ok {
		t.Error("CA bundle shipped though none was asked for")
	}
}

// TestOCILayout reads the same tarball as an OCI image layout (what `ctr import` reads): every
// blob's digest matches its name, index.json names the image, and the layout and Docker's
// manifest.json point at the same config and layers.
func TestOCILayout(t *testing.T) {
	path, res := writeFake(t, Options{Tag: "registry.example:5000/dns/coredns:v1"})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _, names := readTar(t, f)

	for name, b := range files {
		if hexDigest, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != hexDigest {
				t.Errorf("blob %s has digest %x", name, sum)
			}
		}
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout: %q", files["oci-layout"])
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if index.SchemaVersion != 2 || index.MediaType != types.OCIImageIndex || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %+v", index)
	}
	desc := index.Manifests[0]
	if desc.Digest != res.Digest || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("index entry %v %s, want %v %s", desc.Digest, desc.MediaType, res.Digest, types.OCIManifestSchema1)
	}
	if got := desc.Annotations["io.containerd.image.name"]; got != "registry.example:5000/dns/coredns:v1" {
		t.Errorf("containerd name %q", got)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "v1" {
		t.Errorf("ref name %q", got)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != "amd64" {
		t.Errorf("platform %v", desc.Platform)
	}
	rawManifest := files["blobs/sha256/"+desc.Digest.Hex]
	if int64(len(rawManifest)) != desc.Size {
		t.Errorf("manifest size %d, index says %d", len(rawManifest), desc.Size)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("manifest media types: config %s, layers %v", m.Config.MediaType, m.Layers)
	}

	var docker tarball.Manifest
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil || len(docker) != 1 {
		t.Fatalf("manifest.json: %v %v", docker, err)
	}
	if docker[0].Config != "blobs/sha256/"+m.Config.Digest.Hex {
		t.Errorf("manifest.json config %s, OCI manifest config %s", docker[0].Config, m.Config.Digest)
	}
	if len(docker[0].Layers) != 1 || docker[0].Layers[0] != "blobs/sha256/"+m.Layers[0].Digest.Hex {
		t.Errorf("manifest.json layers %v, OCI manifest layers %v", docker[0].Layers, m.Layers)
	}
	if !slices.Equal(docker[0].RepoTags, []string{"registry.example:5000/dns/coredns:v1"}) {
		t.Errorf("RepoTags %v", docker[0].RepoTags)
	}
	for _, want := range []string{"oci-layout", "index.json", "manifest.json"} {
		if !slices.Contains(names, want) {
			t.Errorf("tarball lacks %s: %v", want, names)
		}
	}
}

// TestDockerHubNames: an image without a registry gets Docker Hub's names in both manifests.
func TestDockerHubNames(t *testing.T) {
	path, _ := writeFake(t, Options{Tag: "clusterdns/coredns:abc123-dirty"})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _, _ := readTar(t, f)
	var index v1.IndexManifest
	var docker tarball.Manifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil {
		t.Fatal(err)
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != "docker.io/clusterdns/coredns:abc123-dirty" {
		t.Errorf("containerd name %q", got)
	}
	if !slices.Equal(docker[0].RepoTags, []string{"clusterdns/coredns:abc123-dirty"}) {
		t.Errorf("RepoTags %v", docker[0].RepoTags)
	}
}

// TestReproducible: the same binary and time give byte-identical tarballs.
func TestReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte(fakeBinary), 0o755); err != nil {
		t.Fatal(err)
	}
	created := time.Unix(1_800_000_000, 0)
	a, ra := writeFake(t, Options{Binary: bin, Created: created})
	b, rb := writeFake(t, Options{Binary: bin, Created: created})
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if ra.Digest != rb.Digest || !bytes.Equal(ba, bb) {
		t.Errorf("two builds differ: %v vs %v", ra.Digest, rb.Digest)
	}
}

func TestCACerts(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "ca.crt")
	pem := "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(certs, []byte(pem), 0o644); err != nil {
		t.Fatal(err)
	}
	path, _ := writeFake(t, Options{CACerts: certs})
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files, _, _ := readTar(t, rc)
	if string(files["etc/ssl/certs/ca-certificates.crt"]) != pem {
		t.Errorf("CA bundle: %q", files["etc/ssl/certs/ca-certificates.crt"])
	}
}

func TestRejects(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake")
	os.WriteFile(fake, []byte(fakeBinary), 0o755)
	for name, o := range map[string]Options{
		"bad tag":            {Binary: fake, Tag: "Not A Tag"},
		"missing binary":     {Binary: filepath.Join(dir, "nope"), Tag: "a/b:c"},
		"not ELF but static": {Binary: fake, Tag: "a/b:c", RequireStatic: true},
		"dynamic ELF":        {Binary: "/bin/sh", Tag: "a/b:c", RequireStatic: true},
	} {
		if _, err := WriteFile(filepath.Join(dir, "out.tar"), o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out.tar")); !os.IsNotExist(err) {
		t.Errorf("a failed build left a tarball behind: %v", err)
	}
}

// TestELFArch: a real static Go binary (the test binary itself is not necessarily static, so
// only the architecture is checked) is labelled with its own machine.
func TestELFArch(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	arch, err := elfArch(exe, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"amd64": true, "arm64": true, "386": true, "arm": true, "ppc64le": true, "s390x": true, "riscv64": true}; !want[arch] {
		t.Errorf("arch %q", arch)
	}
}

// TestDockerfileAgrees keeps the Dockerfile's image settings in step with this package's.
func TestDockerfileAgrees(t *testing.T) {
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, strings.TrimSpace(sc.Text()))
	}
	quote := func(ss []string) string {
		b, _ := json.Marshal(ss)
		return strings.ReplaceAll(string(b), ",", ", ")
	}
	for _, want := range []string{
		"FROM scratch",
		"ENTRYPOINT " + quote(Entrypoint),
		"CMD " + quote(Cmd),
		"EXPOSE " + strings.Join(ExposedPorts, " "),
		"USER " + User,
		"COPY --from=build /out/coredns " + BinaryPath,
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("Dockerfile lacks the line %q", want)
		}
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{strings.TrimSuffix(passwd, "\n"), strings.TrimSuffix(group, "\n")} {
		for _, l := range strings.Split(want, "\n") {
			if !strings.Contains(text, l) {
				t.Errorf("Dockerfile does not write the line %q of /etc/passwd or /etc/group", l)
			}
		}
	}
}

// TestProgram checks an image of another program (test/realnode's pause and client images): the
// binary at its path, its entrypoint, the default user, no clusterdns ports or command; and that a
// path in a subfolder is refused (the layer has no folders for it).
func TestProgram(t *testing.T) {
	path, _ := writeFake(t, Options{Tag: "clusterdns.test/pause:t", Program: &Program{Path: "/pause"}})
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatalf("tarball.ImageFromPath: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/pause"}) || c.Cmd != nil || len(c.ExposedPorts) != 0 || c.User != User {
		t.Errorf("config: entrypoint %q, cmd %q, ports %v, user %q; want [/pause], none, none, %s", c.Entrypoint, c.Cmd, c.ExposedPorts, c.User, User)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files, _, _ := readTar(t, rc)
	if string(files["pause"]) != fakeBinary || files["coredns"] != nil {
		t.Errorf("layer files: pause %q, coredns %q; want the binary at pause only", files["pause"], files["coredns"])
	}

	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(bin, []byte(fakeBinary), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(Options{Binary: bin, Program: &Program{Path: "/usr/bin/pause"}}); err == nil {
		t.Error("Build with a program in a subfolder: no error")
	}
}
