// Package image builds the clusterdns container image without a Docker daemon: one static
// binary at /coredns in a single layer, a passwd file naming the non-root user, and an optional CA
// bundle, on an empty base.
//
// The tarball it writes holds the image twice over, sharing the blobs: as an OCI image layout
// (oci-layout, index.json, blobs/sha256/...), which `ctr import`, `podman load`, `skopeo copy
// oci-archive:` and Docker 25+ read, and with Docker's manifest.json beside it, which every
// `docker load` reads. Docker 25's own `docker save` writes the same shape.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What every clusterdns image runs. The Dockerfile at the top of the repository says the same
// (a test keeps the two in step).
var (
	Entrypoint   = []string{"/coredns"}
	Cmd          = []string{"-conf", "/etc/coredns/Corefile"}
	ExposedPorts = []string{"53/udp", "53/tcp", "9153/tcp"}
)

const (
	// BinaryPath is where the binary lives in the image.
	BinaryPath = "/coredns"
	// User is the image's default user: distroless's "nonroot". The node role overrides it with
	// root in its DaemonSet (it creates an interface and nftables rules).
	User = "65532:65532"
	// CACertsPath is where the CA bundle goes, the path Go's crypto/x509 reads first on Linux.
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
)

// passwd and group name root and nonroot, so tools that look a user up find one.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// Options say what goes into the image.
type Options struct {
	// Binary is the path of the binary to ship as /coredns.
	Binary string
	// Tag names the image, such as clusterdns/coredns:v1.0.0.
	Tag string
	// Created is the image's creation time and every file's modification time; the zero value
	// means the Unix epoch. The same inputs and time give the same image digest.
	Created time.Time
	// Arch is the image's architecture (GOARCH spelling). Empty: read from the binary's ELF
	// header ("amd64" for a file that is not ELF, as in tests).
	Arch string
	// RequireStatic refuses an ELF binary that asks for a dynamic loader.
	RequireStatic bool
	// CACerts, if set, is a CA bundle copied to /etc/ssl/certs/ca-certificates.crt (for forward
	// over TLS and other outbound TLS; the Kubernetes client uses its service account's CA).
	CACerts string
	// Labels are the image config's labels (org.opencontainers.image.*).
	Labels map[string]string
	// Program, if set, ships the binary as another program than clusterdns, with its own path
	// and config (test/realnode's pause and client images). Nil means clusterdns's: /coredns.
	Program *Program
}

// Program is where the binary goes in the image and how the image runs it.
type Program struct {
	Path         string   // where the binary goes, directly under / ("/pause")
	Entrypoint   []string // nil means [Path]
	Cmd          []string
	User         string // "uid:gid"; empty means User (65532:65532)
	ExposedPorts []string
}

// clusterdns is the Program of every clusterdns image.
var clusterdns = Program{Path: BinaryPath, Entrypoint: Entrypoint, Cmd: Cmd, User: User, ExposedPorts: ExposedPorts}

// Build assembles the image described by o.
func Build(o Options) (v1.Image, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	arch := o.Arch
	if arch == "" {
		if arch, err = elfArch(o.Binary, o.RequireStatic); err != nil {
			return nil, err
		}
	} else if o.RequireStatic {
		if _, err := elfArch(o.Binary, true); err != nil {
			return nil, err
		}
	}
	var certs []byte
	if o.CACerts != "" {
		if certs, err = os.ReadFile(o.CACerts); err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
	}
	created := o.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC().Truncate(time.Second)

	prog := clusterdns
	if o.Program != nil {
		prog = *o.Program
		if !strings.HasPrefix(prog.Path, "/") || strings.Count(prog.Path, "/") != 1 {
			return nil, fmt.Errorf("program path %q: want a file directly under /", prog.Path)
		}
		if prog.Entrypoint == nil {
			prog.Entrypoint = []string{prog.Path}
		}
		if prog.User == "" {
			prog.User = User
		}
	}

	layerTar, err := rootfs(prog.Path, bin, certs, created)
	if err != nil {
		return nil, err
	}
	createdBy := "clusterdns internal/image: " + prog.Path + ", /etc/passwd, /etc/group"
	if certs != nil {
		createdBy += ", " + CACertsPath
	}
	config := v1.Config{
		Entrypoint:   prog.Entrypoint,
		Cmd:          prog.Cmd,
		User:         prog.User,
		WorkingDir:   "/",
		ExposedPorts: map[string]struct{}{},
		Labels:       o.Labels,
	}
	for _, p := range prog.ExposedPorts {
		config.ExposedPorts[p] = struct{}{}
	}
	return FromLayer(layerTar, arch, createdBy, created, config, tarball.WithCompressionLevel(gzip.BestCompression))
}

// FromLayer assembles a linux image of one layer, the uncompressed tar layerTar, with config:
// Build's image once its layer is made, for file systems made elsewhere (test/realnode's
// mkrootfs). opts add to the layer's options (OCI media type, compressed caching).
func FromLayer(layerTar []byte, arch, createdBy string, created time.Time, config v1.Config, opts ...tarball.LayerOption) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, append([]tarball.LayerOption{tarball.WithMediaType(types.OCILayer)}, append(opts, tarball.WithCompressedCaching)...)...)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: created}, CreatedBy: createdBy},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = arch, "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config = config
	return mutate.ConfigFile(img, cf)
}

// rootfs is the single layer: /etc/passwd, /etc/group, the CA bundle if any, and the binary at
// binPath.
func rootfs(binPath string, bin, certs []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: mtime, Format: tar.FormatUSTAR})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc/", 0o755) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
	}
	if certs != nil {
		steps = append(steps,
			func() error { return dir("etc/ssl/", 0o755) },
			func() error { return dir("etc/ssl/certs/", 0o755) },
			func() error { return file(strings.TrimPrefix(CACertsPath, "/"), 0o644, certs) })
	}
	steps = append(steps, func() error { return file(strings.TrimPrefix(binPath, "/"), 0o755, bin) })
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// elfArch returns the GOARCH name of an ELF binary's machine, "amd64" for a file that is not
// ELF (unless static is required), and an error for a dynamically linked binary when static is.
func elfArch(path string, static bool) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) && !static {
			return "amd64", nil
		}
		return "", fmt.Errorf("%s: not an ELF binary: %w", path, err)
	}
	defer f.Close()
	if static {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				return "", fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0 (./build.sh build does)", path)
			}
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_386:
		return "386", nil
	case elf.EM_ARM:
		return "arm", nil
	case elf.EM_PPC64:
		return "ppc64le", nil
	case elf.EM_S390:
		return "s390x", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	}
	return "", fmt.Errorf("%s: unsupported machine %v", path, f.Machine)
}

// ParseTag checks a tag and gives it Docker's default registry and "latest" when absent.
func ParseTag(s string) (name.Tag, error) {
	return name.NewTag(s)
}

// containerdName is the fully qualified name containerd files an imported image under.
func containerdName(t name.Tag) string {
	reg := t.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + t.RepositoryStr() + ":" + t.TagStr()
}

// dockerName is the name `docker images` shows: without the default registry.
func dockerName(t name.Tag) string {
	if t.RegistryStr() == name.DefaultRegistry {
		return strings.TrimPrefix(t.RepositoryStr(), "library/") + ":" + t.TagStr()
	}
	return t.RegistryStr() + "/" + t.RepositoryStr() + ":" + t.TagStr()
}

// Write writes img, named tag, as a tarball: an OCI image layout plus Docker's manifest.json.
func Write(w io.Writer, tag name.Tag, img v1.Image, created time.Time) error {
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC().Truncate(time.Second)
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	hdr := func(name string, size int64, dir bool) *tar.Header {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: created, Format: tar.FormatUSTAR}
		if dir {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		return h
	}
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(hdr(name, int64(len(data)), false)); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(hdr(d, 0, true)); err != nil {
			return err
		}
	}
	digest := sha256.Sum256(manifest)
	manifestDigest := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(digest[:])}
	if err := put(blob(manifestDigest), manifest); err != nil {
		return err
	}
	if err := put(blob(cfgName), cfg); err != nil {
		return err
	}
	var layerPaths []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr(blob(d), size, false)); err != nil {
			rc.Close()
			return err
		}
		_, err = io.Copy(tw, rc)
		rc.Close()
		if err != nil {
			return err
		}
		layerPaths = append(layerPaths, blob(d))
	}

	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Digest:    manifestDigest,
			Size:      int64(len(manifest)),
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
			Annotations: map[string]string{
				"io.containerd.image.name":          containerdName(tag),
				"org.opencontainers.image.ref.name": tag.TagStr(),
			},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := put("index.json", indexJSON); err != nil {
		return err
	}
	dockerManifest, err := json.Marshal(tarball.Manifest{{
		Config:   blob(cfgName),
		RepoTags: []string{dockerName(tag)},
		Layers:   layerPaths,
	}})
	if err != nil {
		return err
	}
	if err := put("manifest.json", dockerManifest); err != nil {
		return err
	}
	return tw.Close()
}

// Result describes a written image.
type Result struct {
	Tag      name.Tag
	Digest   v1.Hash // of the manifest
	Platform string  // os/arch
	Size     int64   // bytes of the tarball
}

// WriteTarball writes img to path as Write does, through a temporary file in the same folder,
// renamed into place (mode 0644), so a failed run leaves no half-written tarball.
func WriteTarball(path string, tag name.Tag, img v1.Image, created time.Time) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, tag, img, created); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteFile builds the image and writes it to path (through a temporary file in the same folder,
// renamed into place, so a failed run leaves no half-written tarball).
func WriteFile(path string, o Options) (Result, error) {
	var res Result
	tag, err := ParseTag(o.Tag)
	if err != nil {
		return res, err
	}
	img, err := Build(o)
	if err != nil {
		return res, err
	}
	if err := WriteTarball(path, tag, img, o.Created); err != nil {
		return res, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return res, err
	}
	d, err := img.Digest()
	if err != nil {
		return res, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return res, err
	}
	return Result{Tag: tag, Digest: d, Platform: cf.OS + "/" + cf.Architecture, Size: fi.Size()}, nil
}
