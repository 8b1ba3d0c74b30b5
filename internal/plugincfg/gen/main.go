// Command gen writes the generated files of cmd/coredns from plugin.cfg.
// It runs through `go generate ./cmd/coredns`.
package main

import (
	"flag"
	"log"
	"os"
	"path/filepath"

	"github.com/clusterdns/clusterdns/internal/plugincfg"
)

func main() {
	cfg := flag.String("cfg", "plugin.cfg", "path of plugin.cfg")
	out := flag.String("out", ".", "folder to write the generated files to")
	pkg := flag.String("pkg", "main", "package name of the generated files")
	flag.Parse()

	f, err := os.Open(*cfg)
	if err != nil {
		log.Fatalf("gen: %v", err)
	}
	plugins, err := plugincfg.Parse(f)
	f.Close()
	if err != nil {
		log.Fatalf("gen: %v", err)
	}
	files, err := plugincfg.Files(*pkg, plugins)
	if err != nil {
		log.Fatalf("gen: %v", err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(*out, name), data, 0o644); err != nil {
			log.Fatalf("gen: %v", err)
		}
	}
}
