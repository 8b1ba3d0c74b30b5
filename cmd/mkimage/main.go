// Command mkimage writes the clusterdns container image as a tarball, without a Docker daemon:
//
//	mkimage -binary ./coredns -tag clusterdns/coredns:v1.0.0 -o coredns.image.tar
//
// The tarball loads with `docker load -i`, `ctr -n k8s.io images import`, `podman load -i`, or
// `skopeo copy oci-archive:FILE docker://REGISTRY/...` (see internal/image). ./build.sh image runs
// it on the static binary that ./build.sh build writes. With -program /NAME it ships another
// static program as /NAME, its entrypoint (test/realnode's pause and client images).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/image"
)

type labels map[string]string

func (l labels) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labels) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	l[k] = v
	return nil
}

func main() {
	o := image.Options{Labels: labels{}, RequireStatic: true}
	out := flag.String("o", "coredns.image.tar", "output tarball")
	created := flag.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "creation time, Unix seconds or RFC 3339 (default $SOURCE_DATE_EPOCH, else the epoch)")
	flag.StringVar(&o.Binary, "binary", "coredns", "static binary to ship as /coredns")
	flag.StringVar(&o.Tag, "tag", "clusterdns/coredns:dev", "image name and tag")
	flag.StringVar(&o.Arch, "arch", "", "architecture (default: read from the binary)")
	flag.StringVar(&o.CACerts, "ca-certs", "", "CA bundle to ship as "+image.CACertsPath+" (optional)")
	flag.Var(labels(o.Labels), "label", "image label KEY=VALUE (repeatable)")
	program := flag.String("program", "", "ship the binary as this program instead of clusterdns: its path directly under /, also the entrypoint (test images)")
	user := flag.String("user", "", "with -program: the image's user uid:gid (default "+image.User+")")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q", flag.Arg(0)))
	}
	if *program != "" {
		o.Program = &image.Program{Path: *program, User: *user}
	} else if *user != "" {
		fail(fmt.Errorf("-user needs -program"))
	}
	if *created != "" {
		t, err := parseTime(*created)
		if err != nil {
			fail(err)
		}
		o.Created = t
	}
	res, err := image.WriteFile(*out, o)
	if err != nil {
		fail(err)
	}
	fmt.Printf("wrote %s (%.1f MB): %s, %s, manifest %s\n", *out, float64(res.Size)/1e6, res.Tag.String(), res.Platform, res.Digest)
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("-created: %q is neither Unix seconds nor RFC 3339", s)
	}
	return t, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mkimage:", err)
	os.Exit(1)
}
