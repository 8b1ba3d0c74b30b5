package k8sdiscovery

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
)

// manifestPoll is how often the manifests folder is checked for changes.
var manifestPoll = time.Second

// manifestObject is one object read from the folder, with the resource it is stored under.
type manifestObject struct {
	gvr schema.GroupVersionResource
	obj metav1.Object
}

func (m manifestObject) key() string {
	return m.gvr.Resource + "/" + m.obj.GetNamespace() + "/" + m.obj.GetName()
}

var (
	gvrServices   = corev1.SchemeGroupVersion.WithResource("services")
	gvrNamespaces = corev1.SchemeGroupVersion.WithResource("namespaces")
	gvrPods       = corev1.SchemeGroupVersion.WithResource("pods")
	gvrSlices     = discoveryv1.SchemeGroupVersion.WithResource("endpointslices")
)

// newManifestSource serves the Namespaces, Services, EndpointSlices and Pods of a folder of
// Kubernetes YAML through a fake clientset, so that they reach the store by the same list and
// watch as objects from an API server. The folder is read again when a file changes; a folder that no
// longer parses is logged and the objects already loaded stay.
func newManifestSource(dir string, stop <-chan struct{}) (kubernetes.Interface, error) {
	objs, err := loadManifests(dir)
	if err != nil {
		return nil, err
	}
	client := fake.NewClientset()
	current := map[string]manifestObject{}
	if err := syncManifests(client.Tracker(), current, objs); err != nil {
		return nil, err
	}
	log.Infof("loaded %d objects from %s", len(objs), dir)
	go func() {
		sig := folderSignature(dir)
		t := time.NewTicker(manifestPoll)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			next := folderSignature(dir)
			if next == sig {
				continue
			}
			sig = next
			objs, err := loadManifests(dir)
			if err != nil {
				log.Errorf("reload %s: %v; keeping the objects loaded before", dir, err)
				continue
			}
			if err := syncManifests(client.Tracker(), current, objs); err != nil {
				log.Errorf("reload %s: %v", dir, err)
				continue
			}
			log.Infof("reloaded %d objects from %s", len(objs), dir)
		}
	}()
	return client, nil
}

// syncManifests makes the tracker hold exactly objs; current is what it held before and is updated.
func syncManifests(tracker k8stesting.ObjectTracker, current map[string]manifestObject, objs []manifestObject) error {
	want := map[string]manifestObject{}
	for _, o := range objs {
		want[o.key()] = o
	}
	for key, o := range current {
		if _, ok := want[key]; !ok {
			if err := tracker.Delete(o.gvr, o.obj.GetNamespace(), o.obj.GetName()); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("remove %s: %w", key, err)
			}
			delete(current, key)
		}
	}
	for key, o := range want {
		ro := o.obj.(runtime.Object)
		var err error
		if _, ok := current[key]; ok {
			err = tracker.Update(o.gvr, ro, o.obj.GetNamespace())
		} else {
			err = tracker.Create(o.gvr, ro, o.obj.GetNamespace())
		}
		if err != nil {
			return fmt.Errorf("load %s: %w", key, err)
		}
		current[key] = o
	}
	return nil
}

// loadManifests reads every .yaml, .yml and .json file of dir (not recursing into hidden folders).
// Kinds other than Namespace, Service, EndpointSlice and Pod are skipped with a log line.
func loadManifests(dir string) ([]manifestObject, error) {
	files, err := manifestFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []manifestObject
	seen := map[string]string{}
	for _, f := range files {
		objs, err := decodeManifestFile(f)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if prev, dup := seen[o.key()]; dup {
				return nil, fmt.Errorf("%s: %s is also defined in %s", f, o.key(), prev)
			}
			seen[o.key()] = f
			out = append(out, o)
		}
	}
	return out, nil
}

func manifestFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read manifests folder: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

func decodeManifestFile(path string) ([]manifestObject, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []manifestObject
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, doc, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || isOnlyComments(raw) {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(raw, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, doc, err)
		}
		var gvr schema.GroupVersionResource
		switch obj.(type) {
		case *corev1.Namespace:
			gvr = gvrNamespaces
		case *corev1.Service:
			gvr = gvrServices
		case *discoveryv1.EndpointSlice:
			gvr = gvrSlices
		case *corev1.Pod:
			gvr = gvrPods
		default:
			log.Warningf("%s: document %d: skipping kind %s (only Namespace, Service, EndpointSlice and Pod are served)", path, doc, gvk.Kind)
			continue
		}
		m := obj.(metav1.Object)
		if m.GetName() == "" {
			return nil, fmt.Errorf("%s: document %d: %s without metadata.name", path, doc, gvk.Kind)
		}
		if gvr != gvrNamespaces && m.GetNamespace() == "" {
			m.SetNamespace(metav1.NamespaceDefault)
		}
		out = append(out, manifestObject{gvr: gvr, obj: m})
	}
}

func isOnlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// folderSignature changes when a file of the folder is added, removed or modified.
func folderSignature(dir string) string {
	files, err := manifestFiles(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}
