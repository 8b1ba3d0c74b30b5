// Command mkrootfs writes an OCI image tarball (for `ctr images import`) whose one layer is a
// given tar file: test/realnode's images with more than one file (agnhost with a shell, dig and
// getent; the glibc client), which cmd/mkimage, one static binary per image, cannot make. The
// tarball has the same shape as cmd/mkimage's (internal/image.Write).
//
//	mkrootfs -layer rootfs.tar -tag registry.k8s.io/e2e-test-images/agnhost:2.66.1 \
//	    -entrypoint /agnhost -user 0:0 -o agnhost.image.tar
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/clusterdns/clusterdns/internal/image"
)

func main() {
	layerPath := flag.String("layer", "", "uncompressed tar of the root file system")
	tagName := flag.String("tag", "", "image name and tag")
	out := flag.String("o", "", "output tarball")
	entrypoint := flag.String("entrypoint", "", "entrypoint, words separated by spaces (empty: none)")
	user := flag.String("user", "0:0", "the image's user uid:gid")
	flag.Parse()
	if err := run(*layerPath, *tagName, *out, *entrypoint, *user); err != nil {
		fmt.Fprintln(os.Stderr, "mkrootfs:", err)
		os.Exit(1)
	}
}

func run(layerPath, tagName, out, entrypoint, user string) error {
	if layerPath == "" || tagName == "" || out == "" {
		return fmt.Errorf("-layer, -tag and -o are required")
	}
	tag, err := image.ParseTag(tagName)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(layerPath)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return err
	}
	created := time.Unix(0, 0).UTC()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "test/realnode/cmd/mkrootfs"},
	})
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{User: user, WorkingDir: "/", Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if entrypoint != "" {
		cf.Config.Entrypoint = strings.Fields(entrypoint)
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(out + ".tmp")
	if err := image.Write(f, tag, img, created); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}
