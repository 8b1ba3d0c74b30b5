// Command mkrootfs writes an OCI image tarball (for `ctr images import`) whose one layer is a
// given tar file: test/realnode's images with more than one file (agnhost with a shell, dig and
// getent; the glibc client), which cmd/mkimage, one static binary per image, cannot make. The
// tarball has the same shape as cmd/mkimage's (internal/image.FromLayer and WriteTarball).
//
//	mkrootfs -layer rootfs.tar -tag registry.k8s.io/e2e-test-images/agnhost:2.66.1 \
//	    -entrypoint /agnhost -user 0:0 -o agnhost.image.tar
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

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
	created := time.Unix(0, 0).UTC()
	config := v1.Config{User: user, WorkingDir: "/", Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if entrypoint != "" {
		config.Entrypoint = strings.Fields(entrypoint)
	}
	img, err := image.FromLayer(data, "amd64", "test/realnode/cmd/mkrootfs", created, config)
	if err != nil {
		return err
	}
	return image.WriteTarball(out, tag, img, created)
}
