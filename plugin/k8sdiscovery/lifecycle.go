package k8sdiscovery

// The plugin's start and stop: the watch begins at startup and ends with the server.

import "time"

// start connects to the source of objects and waits briefly for the first sync, so that a fresh
// server rarely answers SERVFAIL; after the wait it serves anyway (SERVFAIL until synced).
func (k *K8sDiscovery) start() error {
	client, err := k.newClient()
	if err != nil {
		return err
	}
	w := newWatcher(k, client)
	if len(k.cfg.multicluster) > 0 {
		imports, err := k.newImportClient()
		if err != nil {
			return err
		}
		w.watchImports(imports)
	}
	w.streaming = k.cfg.manifests == "" // a fake clientset (manifests) cannot stream lists
	w.run(k.stopCh)
	deadline := time.Now().Add(k.cfg.startupTimeout)
	for !k.synced.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !k.synced.Load() {
		log.Warningf("not synced with the API server after %s: answering SERVFAIL for the zone until it is", k.cfg.startupTimeout)
	}
	return nil
}

func (k *K8sDiscovery) stop() {
	k.stopOnce.Do(func() { close(k.stopCh) })
}

func (k *K8sDiscovery) namespaceAllowed(ns string) bool {
	return len(k.cfg.namespaces) == 0 || k.cfg.namespaces[ns]
}
