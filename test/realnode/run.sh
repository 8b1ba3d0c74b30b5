#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster on this machine with kubeadm's CoreDNS add-on, deploys
# clusterdns over it the way an operator would (deploy/cluster, then deploy/node), resolves names
# from pods through both roles, prints a table of what passed, and tears everything down, also
# when a step fails (trap).
#
#   test/realnode/run.sh            (root; after test/realnode/build.sh and ./build.sh image)
#   REALNODE_KEEP=1 test/realnode/run.sh   stop before the teardown and wait for Ctrl-C (or
#                                           SIGINT/SIGTERM), with how to reach the node printed
#   REALNODE_NODE_RESOLVER=ADDR test/realnode/run.sh   the node's resolver (default: the stand-in
#                                           for the internet that the run starts, 10.199.0.2)
#
# The whole node lives in its own network namespace (NETNS below): etcd, kube-apiserver, kubelet,
# kube-proxy's iptables rules, the CNI bridge, the node role's interface and nftables table. Other
# work on this shared machine sees none of it, and deleting the namespace removes all of it. The
# processes join only the network namespace (nsenter --net), not a mount namespace, so kubelet's
# volume mounts and containerd's rootfs mounts see each other. README.md beside this file says
# what was chosen and why.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CP=$("$ROOT/test/e2e/controlplane/build.sh" dir)
KUBE=$("$HERE/build.sh" dir)
CONTAINERD=$("$HERE/build.sh" containerd-dir)
IMAGES=$("$HERE/build.sh" images-dir)
CACHE=$(dirname "$IMAGES")

STATE=${REALNODE_STATE:-/var/lib/clusterdns-realnode}
NETNS=clusterdns-realnode
NODE_NAME=realnode
NODE_IP=10.199.0.1
# The node's resolver for names outside the cluster (the namespace has no way out): ./coredns
# serving example.com and 8.8.8.8's PTR from zone files and NXDOMAIN for the rest, as a stand-in
# for the internet.
OUTSIDE_DNS=10.199.0.2
CLUSTER_CIDR=10.244.0.0/16
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
KUBE_DNS_IP=10.96.0.10
NODE_LOCAL_DNS=169.254.20.10
CNI_NETWORK=clusterdns-realnode
# Names the client pods ask, relative (the search list kubelet writes does the rest) and absolute:
# ClusterIP Services, a headless one, an ExternalName (manifests/names.yaml) and a name outside the
# cluster (the stand-in resolver's).
NAMES=(kubernetes kubernetes.default kube-dns.kube-system clusterdns-upstream.kube-system.svc
	kubernetes.default.svc.cluster.local. dns-headless.kube-system api-alias www.example.com)
# Those that exist before deploy/node (clusterdns-upstream is its Service).
KUBEADM_NAMES=(kubernetes kube-dns.kube-system dns-headless.kube-system api-alias www.example.com)
KUBEADM_COREDNS_IMAGE=registry.k8s.io/coredns/coredns:v1.14.6
# The Kubernetes conformance DNS tests (e2e.test, built by build.sh): on unless
# REALNODE_CONFORMANCE=0. They run twice: kubelet's clusterDNS the central role's Service
# (10.96.0.10), then the node role's address.
CONFORMANCE=${REALNODE_CONFORMANCE:-1}
CONFORMANCE_FOCUS=${REALNODE_CONFORMANCE_FOCUS:-'\[sig-network\] DNS'}

[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root (network namespace, containerd, kubelet)" >&2; exit 1; }
for b in "$CP/etcd" "$CP/kube-apiserver" "$CP/kube-controller-manager" "$CP/kubectl" \
	"$KUBE/kubelet" "$KUBE/kube-proxy" "$KUBE/kube-scheduler" "$CONTAINERD/containerd" "$CONTAINERD/ctr" \
	"$IMAGES/pause.image.tar" "$IMAGES/resolve.image.tar" "$IMAGES/getaddrinfo.image.tar" "$ROOT/coredns.image.tar" "$ROOT/coredns" \
	"$IMAGES/dnsload.image.tar" "$IMAGES/agnhost.image.tar" "$IMAGES/glibc-dns-testing.image.tar" \
	$([ "$CONFORMANCE" = 1 ] && echo "$KUBE/e2e.test"); do
	[ -e "$b" ] || { echo "run.sh: $b is missing: run ./build.sh realnode (it builds everything first)" >&2; exit 1; }
done

export PATH=$CONTAINERD:$KUBE:$CP:/usr/sbin:/usr/bin:/sbin:/bin
START=$SECONDS
STEPS=()
FAILED=0
LOGS=$STATE/log
KUBECONFIG=$STATE/admin.kubeconfig
export KUBECONFIG

log() { echo "realnode [$((SECONDS - START)) s]: $*" >&2; }
# step records a row of the final table: NAME pass|FAIL DETAIL.
step() {
	STEPS+=("$(printf '%-52s %-5s %s' "$1" "$2" "${3:-}")")
	[ "$2" = pass ] || FAILED=1
	log "$1: $2 ${3:-}"
}
in_node() { nsenter --net="/run/netns/$NETNS" -- "$@"; }
k() { in_node kubectl "$@"; }
ctr_node() { ctr --address "$STATE/containerd.sock" -n k8s.io "$@"; }

# start NAME CMD...: a process in the node's network namespace, logging to $LOGS/NAME.log, its PID
# in $STATE/pids/NAME. nsenter is started as a simple command (not through a function, which
# would fork a subshell) and execs CMD, so $! is the process itself.
start() {
	local name=$1
	shift
	nsenter --net="/run/netns/$NETNS" -- "$@" >"$LOGS/$name.log" 2>&1 &
	echo $! >"$STATE/pids/$name"
}

# wait_for WHAT SECONDS CMD...: run CMD every second until it succeeds.
wait_for() {
	local what=$1 limit=$2 t0=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - t0 >= limit)); then
			log "$what: not after $limit s"
			return 1
		fi
		sleep 1
	done
	log "$what after $((SECONDS - t0)) s"
}

stop_pid() {
	local name=$1 pid i
	[ -s "$STATE/pids/$name" ] || return 0
	pid=$(cat "$STATE/pids/$name")
	kill "$pid" 2>/dev/null || { rm -f "$STATE/pids/$name"; return 0; }
	for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null && for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$STATE/pids/$name"
}

# The kernel settings kubelet changes on start (protectKernelDefaults false): they are not
# per namespace, so they are put back as they were for the other users of this machine.
KERNEL_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
save_sysctls() {
	local s
	mkdir -p "$STATE"
	for s in "${KERNEL_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$STATE/sysctls.saved"
}
restore_sysctls() {
	[ -s "$STATE/sysctls.saved" ] || return 0
	sysctl -q -p "$STATE/sysctls.saved" >/dev/null || true
}

# teardown stops everything this script started, in reverse order, and removes what it made. It
# runs on every exit and is safe to run again (also as `run.sh teardown` after a crash).
teardown() {
	set +e
	log "teardown"
	# The pods' own logs, before deleting the pods removes them.
	[ -d "$STATE/pod-logs" ] && cp -r "$STATE/pod-logs" "$LOGS/pods" 2>/dev/null
	if [ -s "$STATE/pids/kubelet" ] && kill -0 "$(cat "$STATE/pids/kubelet")" 2>/dev/null; then
		# Through the kubelet, so each sandbox's CNI DEL runs and its netns is removed.
		k delete pods --all -n default --grace-period=5 --timeout=30s >/dev/null 2>&1
		# What a conformance test left behind (its namespace's pods), through the kubelet too.
		k delete pods --all -A --field-selector metadata.namespace!=kube-system --grace-period=5 --timeout=30s >/dev/null 2>&1
		k delete daemonset,deployment --all -n kube-system --timeout=60s >/dev/null 2>&1
		k delete pods --all -n kube-system --grace-period=5 --timeout=45s >/dev/null 2>&1
	fi
	for p in kube-proxy kubelet kube-scheduler kube-controller-manager; do stop_pid "$p"; done
	if [ -S "$STATE/containerd.sock" ]; then
		local t
		for t in $(ctr_node tasks ls -q 2>/dev/null); do ctr_node tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
		sleep 1
		for t in $(ctr_node tasks ls -q 2>/dev/null); do ctr_node tasks delete -f "$t" >/dev/null 2>&1; done
		for t in $(ctr_node containers ls -q 2>/dev/null); do ctr_node containers delete "$t" >/dev/null 2>&1; done
	fi
	# Whatever is left in kubelet's cgroups is ours: kill it by PID.
	local cg pid
	for cg in /sys/fs/cgroup/*/kubepods; do
		[ -d "$cg" ] || continue
		for pid in $(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
	done
	stop_pid containerd
	# The shims of our containerd (started with -address $STATE/containerd.sock), by PID.
	for pid in $(grep -laF -- "$STATE/containerd.sock" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
		[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = containerd-shim ] && kill -9 "$pid" 2>/dev/null
	done
	stop_pid kube-apiserver
	stop_pid etcd
	stop_pid outside-dns
	# Mounts under $STATE (kubelet's volumes, container rootfs, sandbox shm), deepest first.
	local m
	for m in $(awk -v s="$STATE" 'index($5, s "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	for cg in /sys/fs/cgroup/*/kubepods; do
		[ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	# Pod network namespaces containerd pinned under /run/netns (cni-*) that were not there before.
	local ns
	for ns in $(ls /run/netns 2>/dev/null); do
		case $ns in cni-*) grep -qx "$ns" "$STATE/netns.before" 2>/dev/null || { umount "/run/netns/$ns" 2>/dev/null; rm -f "/run/netns/$ns"; } ;; esac
	done
	rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null
	[ -f "$STATE/run/cni.created" ] && rm -rf /var/lib/cni
	ip netns del "$NETNS" 2>/dev/null
	restore_sysctls
	# The logs survive the run (for a failure's post-mortem); the rest goes.
	if [ -d "$LOGS" ]; then
		rm -rf "$CACHE/last-run"
		mkdir -p "$CACHE/last-run" && cp -r "$LOGS/." "$CACHE/last-run/"
	fi
	[ -f "$STATE/run/containerd.created" ] && rm -rf /run/containerd
	rm -rf "$STATE"
	log "teardown done (logs in $CACHE/last-run)"
}

on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	# A signal's trap can run inside a function whose output is redirected to a log (k ... >log):
	# the table goes where the run's output went.
	exec 1>&3 2>&4
	if [ "$FAILED" = 0 ] && [ "$rc" != 0 ]; then step "script" FAIL "exited $rc before its last step (see logs)"; fi
	if [ -n "${REALNODE_KEEP:-}" ]; then
		log "REALNODE_KEEP: the node is up. nsenter --net=/run/netns/$NETNS kubectl --kubeconfig $KUBECONFIG ...; Ctrl-C tears down"
		# wait returns on a signal (kill -INT from another shell too; a foreground sleep would not).
		trap : INT TERM
		sleep infinity &
		wait $! || true
		kill $! 2>/dev/null
	fi
	local t0=$SECONDS
	teardown
	local left
	# The pattern comes from a file: grep's own command line must not hold it.
	left=$(grep -laF -f <(echo "$STATE") /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | tr '\n' ' ')
	if ip netns list | grep -qw "$NETNS" || [ -e "$STATE" ] || [ -n "$left" ]; then
		step "teardown" FAIL "left: netns $(ip netns list | grep -cw "$NETNS"), $STATE $([ -e "$STATE" ] && echo exists || echo gone), processes: ${left:-none}"
	else
		step "teardown" pass "$((SECONDS - t0)) s"
	fi
	echo
	echo "realnode: $(date -u +%FT%TZ), $((SECONDS - START)) s"
	printf '%-52s %-5s %s\n' STEP RESULT DETAIL
	printf '%s\n' "${STEPS[@]}"
	[ "$FAILED" = 0 ] || exit 1
	exit 0
}

if [ "${1:-}" = teardown ]; then
	teardown
	exit 0
fi
ip netns list | grep -qw "$NETNS" && { echo "run.sh: netns $NETNS exists: another run is active, or run $0 teardown" >&2; exit 1; }

# --- the node's network and state -------------------------------------------------------------
rm -rf "$STATE"
mkdir -p "$STATE/pids" "$LOGS" "$STATE/pki" "$STATE/cni/net.d" "$STATE/run"
ls /run/netns >"$STATE/netns.before" 2>/dev/null || true
# Folders containerd and libcni make outside $STATE whatever their configuration says: removed at
# the end if this run made them.
[ -d /run/containerd ] || { mkdir -p /run/containerd && touch "$STATE/run/containerd.created"; }
[ -d /var/lib/cni ] || touch "$STATE/run/cni.created"
save_sysctls
exec 3>&1 4>&2
trap on_exit EXIT
trap 'exit 130' INT TERM

ip netns add "$NETNS"
in_node ip link set lo up
# The node's address, on a bridge with no ports: this kernel has no dummy driver.
in_node ip link add node0 type bridge
in_node ip addr add "$NODE_IP/24" dev node0
in_node ip addr add "$OUTSIDE_DNS/24" dev node0
in_node ip link set node0 up
# A real node has a default route. Without any, a host-network client (the node role's watch of
# https://10.96.0.1) fails with "network is unreachable" before kube-proxy's DNAT is consulted:
# the service range gets a route of its own.
in_node ip route add "$SERVICE_CIDR" dev node0
# The node role's interface, made here as a bridge for the same reason; nodecache adopts an
# existing clusterdns0 (production nodes have the dummy driver and nodecache makes its own).
in_node ip link add clusterdns0 type bridge
in_node sysctl -q -w net.ipv4.ip_forward=1
# Pod-to-Service traffic where both pods sit on the CNI bridge needs the bridge's frames to pass
# iptables (kube-proxy's DNAT and its reverse); per network namespace on this kernel.
in_node sysctl -q -w net.bridge.bridge-nf-call-iptables=1
mkdir -p "$STATE/outside"
cat >"$STATE/outside/example.com.zone" <<'EOF'
$ORIGIN example.com.
@    3600 IN SOA ns.example.com. hostmaster.example.com. 1 7200 3600 1209600 60
@    3600 IN NS  ns.example.com.
ns   3600 IN A   10.199.0.2
www  3600 IN A   192.0.2.10
www  3600 IN AAAA 2001:db8::10
EOF
# The one internet answer a conformance spec asks for: "DNS configMap nameserver Forward PTR lookup"
# first checks that 8.8.8.8's PTR (dns.google.) resolves with the cluster's own Corefile.
cat >"$STATE/outside/8.8.8.in-addr.arpa.zone" <<'EOF'
$ORIGIN 8.8.8.in-addr.arpa.
@    3600 IN SOA ns.example.com. hostmaster.example.com. 1 7200 3600 1209600 60
@    3600 IN NS  ns.example.com.
8    3600 IN PTR dns.google.
EOF
cat >"$STATE/outside/Corefile" <<EOF
example.com {
    bind $OUTSIDE_DNS
    file $STATE/outside/example.com.zone
}
8.8.8.in-addr.arpa {
    bind $OUTSIDE_DNS
    file $STATE/outside/8.8.8.in-addr.arpa.zone
}
. {
    bind $OUTSIDE_DNS
    template IN NS . {
        answer ". 86400 IN NS ns.example.com."
    }
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
# The node's resolv.conf as kubelet hands it to dnsPolicy Default pods (both roles of ours).
# REALNODE_NODE_RESOLVER=10.255.255.53 (no route to it) plays an outside resolver out of reach.
echo "nameserver ${REALNODE_NODE_RESOLVER:-$OUTSIDE_DNS}" >"$STATE/resolv.conf"
start outside-dns "$ROOT/coredns" -conf "$STATE/outside/Corefile"
step "node network namespace $NETNS" pass "node IP $NODE_IP, pod CIDR $POD_CIDR, node resolver ${REALNODE_NODE_RESOLVER:-$OUTSIDE_DNS}"

# --- control plane ------------------------------------------------------------------------------
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,admin,admin,system:masters" >"$STATE/pki/tokens.csv"
openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: realnode
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $STATE/pki/apiserver.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: realnode
  context:
    cluster: realnode
    user: admin
current-context: realnode
EOF

start etcd etcd --name=realnode --data-dir="$STATE/etcd" \
	--listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
	--listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
	--initial-cluster=realnode=http://127.0.0.1:2380 --unsafe-no-fsync --log-level=warn
# The apiserver's own self-signed serving certificate (--cert-dir) names the advertise address
# and the kubernetes Service's IP, so pods reach it through 10.96.0.1 with apiserver.crt as CA.
start kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
	--bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=6443 \
	--cert-dir="$STATE/pki" --token-auth-file="$STATE/pki/tokens.csv" --authorization-mode=Node,RBAC \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$STATE/pki/sa.key" --service-account-signing-key-file="$STATE/pki/sa.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" --kubelet-preferred-address-types=InternalIP \
	--profiling=false
if wait_for "kube-apiserver /readyz" 90 k get --raw /readyz; then
	step "control plane: etcd, kube-apiserver" pass "$(k version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1)"
else
	step "control plane: etcd, kube-apiserver" FAIL "see $LOGS/kube-apiserver.log"
	exit 1
fi
start kube-controller-manager kube-controller-manager --kubeconfig="$KUBECONFIG" --leader-elect=false \
	--root-ca-file="$STATE/pki/apiserver.crt" --service-account-private-key-file="$STATE/pki/sa.key" \
	--secure-port=0 --cluster-cidr="$CLUSTER_CIDR" --profiling=false
start kube-scheduler kube-scheduler --kubeconfig="$KUBECONFIG" --leader-elect=false --secure-port=0 --profiling=false

# --- containerd ---------------------------------------------------------------------------------
PAUSE=$(cat "$IMAGES/pause.tag")
RESOLVE=$(cat "$IMAGES/resolve.tag")
GETADDRINFO=$(cat "$IMAGES/getaddrinfo.tag")
DNSLOAD=$(cat "$IMAGES/dnsload.tag")
# Debian's getent with glibc (the conformance tests' glibc-dns-testing image, build.sh e2eimages).
GLIBC=$(sed 's/.* //' "$IMAGES/e2e.tag")
# Everything under $STATE: no /etc/containerd, no /run/containerd socket, no NRI socket in /var/run.
cat >"$STATE/containerd.toml" <<EOF
version = 4
root = "$STATE/containerd"
state = "$STATE/run/containerd"
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]
[plugins.'io.containerd.server.v1.grpc']
  address = "$STATE/containerd.sock"
[plugins.'io.containerd.server.v1.ttrpc']
  address = "$STATE/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE"
[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root lacks CAP_SYS_RESOURCE (CapBnd bit 24): a negative oom_score_adj (the
  # sandbox's -998, a Guaranteed pod's -997) fails in runc with "can't get final child's PID
  # from pipe: EOF". Not lower than containerd's own (0) instead.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$STATE/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = "/usr/sbin/runc"
    SystemdCgroup = false
EOF
cat >"$STATE/cni/net.d/10-realnode.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
start containerd containerd --config "$STATE/containerd.toml"
if wait_for "containerd" 60 ctr_node version; then
	IMPORTED=()
	TARS=("$IMAGES/pause.image.tar" "$IMAGES/resolve.image.tar" "$IMAGES/getaddrinfo.image.tar" "$ROOT/coredns.image.tar")
	TARS+=("$IMAGES/dnsload.image.tar" "$IMAGES/agnhost.image.tar" "$IMAGES/glibc-dns-testing.image.tar")
	for tar in "${TARS[@]}"; do
		ctr_node images import "$tar" >>"$LOGS/import.log" 2>&1 && IMPORTED+=("$(basename "$tar")")
	done
	step "containerd $(ctr_node version 2>/dev/null | awk '/Server/{s=1} s && /Version/{print $2; exit}'), images imported" \
		"$([ ${#IMPORTED[@]} = ${#TARS[@]} ] && echo pass || echo FAIL)" "${IMPORTED[*]}"
else
	step "containerd" FAIL "see $LOGS/containerd.log"
	exit 1
fi

# --- kubelet, kube-proxy ------------------------------------------------------------------------
cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only; kubelet refuses it from 1.35 on unless told not to.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$STATE/containerd.sock
# The node role's address: every ClusterFirst pod's nameserver (deploy/node).
clusterDNS: [$NODE_LOCAL_DNS]
clusterDomain: cluster.local
resolvConf: $STATE/resolv.conf
# The apiserver reaches the kubelet (logs, exec) without client certificates: a test node in its
# own network namespace.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
failSwapOn: false
podLogsDir: $STATE/pod-logs
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
EOF
start kubelet kubelet --config="$STATE/kubelet.yaml" --kubeconfig="$KUBECONFIG" --root-dir="$STATE/kubelet" \
	--node-ip="$NODE_IP" --hostname-override="$NODE_NAME"
cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $KUBECONFIG
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the conntrack table's global settings alone (shared machine; read-only in a netns).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start kube-proxy kube-proxy --config="$STATE/kube-proxy.yaml"
node_ready() { [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
if wait_for "node $NODE_NAME Ready" 180 node_ready; then
	step "node Ready (kubelet, containerd, CNI)" pass "$(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}')"
else
	step "node Ready (kubelet, containerd, CNI)" FAIL "see $LOGS/kubelet.log"
	restore_sysctls
	exit 1
fi
restore_sysctls

# --- client pods -------------------------------------------------------------------------------
# client POD IMAGE DNSPOLICY NAMESERVER -- ARGS...: a pod of a client image resolving NAMES;
# passes when it exits 0 (every name answered). Its log (resolv.conf and the answers) goes to
# $LOGS/POD.log. With a NAMESERVER (not "") the pod sets its own resolv.conf (dnsPolicy None) with the search
# list kubelet would write.
client() {
	local pod=$1 image=$2 policy=$3 ns=$4 dnsconfig="" phase="" t0=$SECONDS args
	shift 4
	[ "${1:-}" = -- ] && shift
	args=$(printf '"%s", ' "$@")
	if [ -n "$ns" ]; then
		dnsconfig="
  dnsConfig:
    nameservers: [$ns]
    searches: [default.svc.cluster.local, svc.cluster.local, cluster.local]
    options: [{name: ndots, value: \"5\"}]"
	fi
	k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  namespace: default
spec:
  restartPolicy: Never
  dnsPolicy: $policy$dnsconfig
  containers:
  - name: client
    image: $image
    imagePullPolicy: Never
    args: [${args%, }]
EOF
	while ((SECONDS - t0 < 150)); do
		phase=$(k get pod "$pod" -o jsonpath='{.status.phase}' 2>/dev/null)
		case $phase in Succeeded | Failed) break ;; esac
		sleep 1
	done
	k logs "$pod" >"$LOGS/$pod.log" 2>&1
	sed 's/^/    /' "$LOGS/$pod.log" >&2
	[ "$phase" = Succeeded ]
}
# resolves LABEL POD IMAGE DNSPOLICY NAMESERVER ARGS...: one client pod, one row of the table.
resolves() {
	local label=$1 pod=$2
	shift 2
	if client "$pod" "$@"; then
		step "$label" pass "$(grep -c '^ok' "$LOGS/$pod.log") names, search list and ndots:5 as kubelet writes them"
	else
		step "$label" FAIL "$(grep -c '^FAIL' "$LOGS/$pod.log") names failed, $(grep -c '^ok' "$LOGS/$pod.log") answered ($pod.log)"
	fi
}
# --- kubeadm's CoreDNS: the cluster as an operator has it -----------------------------------------
TAG=$(sed -n 's/.*"io.containerd.image.name":"docker.io\/clusterdns\/coredns:\([^"]*\)".*/\1/p' <(tar -xOf "$ROOT/coredns.image.tar" index.json))
# kubeadm's image name on our image: a stand-in for registry.k8s.io (manifests/kubeadm-coredns.yaml).
ctr_node images tag "docker.io/clusterdns/coredns:$TAG" "$KUBEADM_COREDNS_IMAGE" >>"$LOGS/import.log" 2>&1
# Created as kubeadm creates them (client-go Create: no last-applied annotation, an Update
# manager), so the server-side apply below meets the field owners it meets on a kubeadm cluster.
k create -f "$HERE/manifests/kube-dns.yaml" -f "$HERE/manifests/kubeadm-coredns.yaml" >"$LOGS/apply-kubeadm.log" 2>&1
k apply -f "$HERE/manifests/names.yaml" >>"$LOGS/apply-kubeadm.log" 2>&1
if k -n kube-system rollout status deployment/coredns --timeout=120s >>"$LOGS/apply-kubeadm.log" 2>&1; then
	step "kubeadm's coredns add-on Ready (stand-in image)" pass "kube-dns Service $KUBE_DNS_IP, Deployment coredns 2/2"
else
	step "kubeadm's coredns add-on Ready (stand-in image)" FAIL "see apply-kubeadm.log"
fi
resolves "Go resolver, through kubeadm's CoreDNS ($KUBE_DNS_IP)" go-kubeadm "$RESOLVE" None "$KUBE_DNS_IP" -- -repeat 60s "${KUBEADM_NAMES[@]}"
KUBEADM_UID=$(k -n kube-system get deployment coredns -o jsonpath='{.metadata.uid}')
# deploy/README.md's first step: the stock Corefile, kept for a rollback.
k -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' |
	k -n kube-system create configmap coredns-stock --from-file=Corefile=/dev/stdin >>"$LOGS/apply-kubeadm.log" 2>&1

# --- the central role, as an operator would deploy it over kubeadm's ------------------------------
# The operator's overlay: deploy/<role> with the image tag that ./build.sh image printed.
overlay() {
	mkdir -p "$STATE/deploy/$1"
	cat >"$STATE/deploy/$1/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$STATE/deploy/$1" "$ROOT/deploy/$1")
images:
- name: clusterdns/coredns
  newTag: "$TAG"
EOF
	echo "$STATE/deploy/$1"
}
k apply --server-side --force-conflicts -k "$(overlay cluster)" >"$LOGS/apply-cluster.log" 2>&1 ||
	step "kubectl apply -k deploy/cluster" FAIL "$(tail -1 "$LOGS/apply-cluster.log")"
if k -n kube-system rollout status deployment/coredns --timeout=180s >>"$LOGS/apply-cluster.log" 2>&1; then
	step "central role: coredns pods Ready" pass "$(k -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}/{.spec.replicas} ready, image clusterdns/coredns:'"$TAG")$(
		[ "$(k -n kube-system get deployment coredns -o jsonpath='{.metadata.uid}')" = "$KUBEADM_UID" ] && echo ", kubeadm's Deployment patched in place")$(
		echo ", replica sets (ready/wanted): $(k -n kube-system get rs -l k8s-app=kube-dns -o jsonpath='{range .items[*]}{.status.readyReplicas}/{.spec.replicas} {end}')")"
else
	step "central role: coredns pods Ready" FAIL "$(k -n kube-system get pods -l k8s-app=kube-dns --no-headers 2>&1 | tr -s ' ' | tr '\n' ';')"
fi

# --- the node role ------------------------------------------------------------------------------
k apply --server-side --force-conflicts -k "$(overlay node)" >"$LOGS/apply-node.log" 2>&1 ||
	step "kubectl apply -k deploy/node" FAIL "$(tail -1 "$LOGS/apply-node.log")"
if k -n kube-system rollout status daemonset/clusterdns-node --timeout=180s >>"$LOGS/apply-node.log" 2>&1; then
	step "node role: clusterdns-node DaemonSet Ready" pass "$(k -n kube-system get daemonset clusterdns-node -o jsonpath='{.status.numberReady}/{.status.desiredNumberScheduled} ready')"
else
	step "node role: clusterdns-node DaemonSet Ready" FAIL "$(k -n kube-system get pods -l k8s-app=clusterdns-node --no-headers 2>&1 | tr -s ' ' | tr '\n' ';')"
fi

# --- resolution from pods through both roles ----------------------------------------------------
# Go's resolver first, with retries: it also waits out the first seconds of a new role.
resolves "Go resolver, through the node role ($NODE_LOCAL_DNS)" go-node "$RESOLVE" ClusterFirst "" -- -repeat 60s "${NAMES[@]}"
resolves "Go resolver, through the central role ($KUBE_DNS_IP)" go-central "$RESOLVE" None "$KUBE_DNS_IP" -- -repeat 60s "${NAMES[@]}"
resolves "musl getaddrinfo, through the node role" musl-node "$GETADDRINFO" ClusterFirst "" -- "${NAMES[@]}"
resolves "musl getaddrinfo, through the central role" musl-central "$GETADDRINFO" None "$KUBE_DNS_IP" -- "${NAMES[@]}"
# glibc: getent hosts (gethostbyname2 through nsswitch's dns, glibc's stub resolver).
# No double quotes (the pod's YAML) and no $( (kubelet expands $(VAR) in args).
GETENT='f=0; for n; do if a=`getent hosts $n`; then echo ok $n '"'"'->'"'"' `echo $a`; else echo FAIL $n; f=1; fi; done; exit $f'
resolves "glibc getent, through the node role" glibc-node "$GLIBC" ClusterFirst "" -- sh -c "$GETENT" sh "${NAMES[@]}"
resolves "glibc getent, through the central role" glibc-central "$GLIBC" None "$KUBE_DNS_IP" -- sh -c "$GETENT" sh "${NAMES[@]}"

# The node role's misses go pipelined to the central role (clusterdns-upstream:5353), not to the
# one-query-per-connection fallback on port 53: its upstream exchanges (node metrics, port 9253)
# counted before and after 40 names no cache has seen. Both counts also carry the health checks
# (about one a second per block and upstream), hence the margin.
exchanges() { # TRANSPORT: exchanges with the upstreams of that transport so far
	in_node curl -sf http://127.0.0.1:9253/metrics >"$LOGS/node-metrics.txt" 2>&1 || true
	awk -v t="transport=\"$1\"" '/^coredns_nodecache_upstream_request_duration_seconds_count\{/ && index($0, t) {n += $NF} END {print n + 0}' "$LOGS/node-metrics.txt"
}
p0=$(exchanges pipelined) f0=$(exchanges tcp)
for i in $(seq 40); do
	in_node dig +short +tries=1 +time=2 @"$NODE_LOCAL_DNS" "pipelined-check-$i-$RANDOM.default.svc.cluster.local." >/dev/null 2>&1 || true
done
pipelined=$(($(exchanges pipelined) - p0)) fallback=$(($(exchanges tcp) - f0))
healthy=$(awk '/^coredns_nodecache_upstream_healthy\{/ && /transport="pipelined"/ {print $NF}' "$LOGS/node-metrics.txt" | sort -u | tr '\n' ' ')
if [ "$pipelined" -ge 40 ] && [ "$fallback" -lt 20 ] && [ "$healthy" = "1 " ]; then
	step "node role pipelines to the central role (:5353)" pass "40 new names: $pipelined exchanges pipelined, $fallback over port 53 (health checks included), pipelined upstream healthy"
else
	step "node role pipelines to the central role (:5353)" FAIL "40 new names: $pipelined exchanges pipelined, $fallback over port 53, healthy: ${healthy:-none} (node-metrics.txt)"
fi
log "up and checked in $((SECONDS - START)) s"

# --- the Kubernetes conformance DNS tests -------------------------------------------------------
# kubelet_dns ADDR: kubelet restarted with clusterDNS ADDR (pods started from then on get it).
kubelet_dns() {
	grep -q "^clusterDNS: \[$1\]" "$STATE/kubelet.yaml" && return 0
	sed -i "s/^clusterDNS: .*/clusterDNS: [$1]/" "$STATE/kubelet.yaml"
	stop_pid kubelet
	start kubelet kubelet --config="$STATE/kubelet.yaml" --kubeconfig="$KUBECONFIG" --root-dir="$STATE/kubelet" \
		--node-ip="$NODE_IP" --hostname-override="$NODE_NAME"
	# The node's Ready condition is the old kubelet's until the new one reports: wait for the new
	# kubelet's own health endpoint first.
	wait_for "kubelet restarted with clusterDNS $1, healthz" 60 in_node curl -sf http://127.0.0.1:10248/healthz &&
		wait_for "node Ready" 120 node_ready
	restore_sysctls
}
# conformance LABEL ADDR: e2e.test's DNS specs with kubelet's clusterDNS ADDR; a row per spec.
conformance() {
	local label=$1 addr=$2 dir=$LOGS/e2e-$1 t0=$SECONDS rc=0
	mkdir -p "$dir"
	kubelet_dns "$addr" || { step "conformance DNS ($label): kubelet" FAIL "not Ready with clusterDNS $addr"; return; }
	log "conformance DNS tests ($label, clusterDNS $addr): e2e.test --ginkgo.focus='$CONFORMANCE_FOCUS'"
	in_node "$KUBE/e2e.test" --kubeconfig="$KUBECONFIG" --provider=skeleton --dns-domain=cluster.local \
		--kubectl-path="$CP/kubectl" --report-dir="$dir" --ginkgo.json-report="$dir/report.json" \
		--ginkgo.focus="$CONFORMANCE_FOCUS" --ginkgo.no-color --ginkgo.v >"$dir/e2e.log" 2>&1 || rc=$?
	# pass: a report and exit 0; info: a report with failing specs (their rows say FAIL); FAIL: none.
	step "conformance DNS ($label): e2e.test ran, exit $rc" "$([ -s "$dir/report.json" ] && { [ "$rc" = 0 ] && echo pass || echo info; } || echo FAIL)" "clusterDNS $addr, $((SECONDS - t0)) s, log e2e-$label/e2e.log"
	[ -s "$dir/report.json" ] || return 0
	local line
	while IFS=$'\t' read -r res name detail; do
		STEPS+=("$(printf '  %-50s %-5s %s' "${name#\[sig-network\] }" "$res" "$detail")")
		if [ "$res" = FAIL ]; then FAILED=1; fi
		log "  $res $name $detail"
	done < <(jq -r --arg focus "$CONFORMANCE_FOCUS" '
		.[0].SpecReports[] | select(.LeafNodeType == "It")
		| {name: ((.ContainerHierarchyTexts | join(" ")) + " " + .LeafNodeText), state: .State,
		   msg: ((.Failure.Message // "") | split("\n")[0]), runtime: ((.RunTime // 0) / 1e9 | floor),
		   labels: ((.LeafNodeLabels // []) | join(","))}
		| select(.name | test($focus))
		| [(if .state == "passed" then "pass" elif .state == "failed" or .state == "timedout" or .state == "panicked" then "FAIL" else .state end),
		   .name, (if .state == "passed" then "\(.runtime) s" elif .state == "skipped" and .msg == "" then "not selected: \(.labels)" else .msg[0:120] end)] | @tsv' "$dir/report.json")
}
if [ "$CONFORMANCE" = 1 ]; then
	conformance central "$KUBE_DNS_IP"
	conformance node "$NODE_LOCAL_DNS"
fi

# --- rollouts under load ------------------------------------------------------------------------
# A client pod (cmd/dnsload, dnsPolicy ClusterFirst: through the node role) asks LOAD_RATE q/s of
# a mix of names while the operator rolls deploy/node, then deploy/cluster, to a new image tag
# (the same image under another tag, so the pods are replaced as in an upgrade). Failed queries
# (no answer within 2 s, an error rcode or an empty answer; no retry) are counted per phase by
# the second each query was sent.
LOAD_RATE=${REALNODE_LOAD_RATE:-1000}
LOAD_NAMES=(kubernetes.default.svc.cluster.local. kube-dns.kube-system.svc.cluster.local.
	dns-headless.kube-system.svc.cluster.local. api-alias.default.svc.cluster.local. POD
	www.example.com.)
# window NAME FROM TO: one row of the table from dnsload's "sec UNIX SENT OK FAILED" lines.
window() {
	local r
	r=$(awk -v a="$2" -v b="$3" '$1 == "sec" && $2 >= a && $2 <= b { s += $3; o += $4; f += $5 } END { printf "%d %d %d", s, o, f }' "$LOGS/dnsload.log")
	set -- "$1" "$2" "$3" $r
	local res
	res=$([ "$6" = 0 ] && [ "$4" -gt 0 ] && echo pass || echo FAIL)
	if [ "${WINDOW_INFO:-}" = 1 ]; then
		STEPS+=("$(printf '%-52s %-5s %s' "under load: $1" info "$6 failed of $4 queries ($(($3 - $2 + 1)) s), not counted")")
		return
	fi
	step "under load: $1" "$res" "$6 failed of $4 queries ($(($3 - $2 + 1)) s, $((${4:-0} / ($3 - $2 + 1))) q/s)"
}
rollouts() {
	ctr_node images tag "docker.io/clusterdns/coredns:$TAG" "docker.io/clusterdns/coredns:$TAG-rollout" >>"$LOGS/import.log" 2>&1
	k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: dnsload
  namespace: default
spec:
  restartPolicy: Never
  dnsPolicy: ClusterFirst
  containers:
  - name: dnsload
    image: $DNSLOAD
    imagePullPolicy: Never
    args: [-rate, "$LOAD_RATE", -duration, 15m, $(printf '"%s", ' "${LOAD_NAMES[@]}" | sed 's/, $//')]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
EOF
	dnsload_log() { k logs dnsload >"$LOGS/dnsload.log" 2>&1; }
	dnsload_running() { dnsload_log && grep -q '^sec ' "$LOGS/dnsload.log"; }
	if ! wait_for "dnsload asking" 90 dnsload_running; then
		step "under load: dnsload client" FAIL "$(k get pod dnsload --no-headers 2>&1)"
		return
	fi
	local tw t0 t1 t2 t3 t4 saved=$TAG
	# The first seconds are not counted: the client's own pod record is NXDOMAIN until both
	# roles have seen its address, and that answer is cached for the negative TTL.
	tw=$(date +%s)
	sleep 10
	t0=$(date +%s)
	sleep 15
	t1=$(date +%s)
	TAG=$saved-rollout
	k apply --server-side --force-conflicts -k "$(overlay node)" >"$LOGS/rollout-node.log" 2>&1
	k -n kube-system rollout status daemonset/clusterdns-node --timeout=180s >>"$LOGS/rollout-node.log" 2>&1 ||
		step "rollout of deploy/node" FAIL "see rollout-node.log"
	sleep 5
	t2=$(date +%s)
	sleep 5
	t3=$(date +%s)
	k apply --server-side --force-conflicts -k "$(overlay cluster)" >"$LOGS/rollout-cluster.log" 2>&1
	k -n kube-system rollout status deployment/coredns --timeout=180s >>"$LOGS/rollout-cluster.log" 2>&1 ||
		step "rollout of deploy/cluster" FAIL "see rollout-cluster.log"
	# The old pods answer for lameduck 5s after they leave the Service.
	sleep 10
	t4=$(date +%s)
	sleep 5
	TAG=$saved
	# The rollback of deploy/README.md, under the same load: the stock Corefile back first (our
	# pods reload it and serve it with upstream's plugins), then the Deployment back to kubeadm's
	# revision (1: kubeadm's, 2: the swap, 3: the rollout above). The node role stays in front:
	# its pipelined upstream (:5353) goes away with our Corefile and port 53 takes over.
	local t5 t6 reloaded=0
	t5=$(date +%s)
	k -n kube-system get configmap coredns-stock -o jsonpath='{.data.Corefile}' |
		k -n kube-system create configmap coredns --from-file=Corefile=/dev/stdin --dry-run=client -o yaml |
		k replace -f - >"$LOGS/rollback.log" 2>&1
	reloads() {
		local p n=0
		for p in $(k -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{.items[*].metadata.name}'); do
			k -n kube-system logs "$p" 2>/dev/null | grep -q 'Reloading complete' && n=$((n + 1))
		done
		reloaded=$n
		[ "$n" -ge 2 ]
	}
	wait_for "the central pods reloaded the stock Corefile" 240 reloads || true
	k -n kube-system rollout undo deployment/coredns --to-revision=1 >>"$LOGS/rollback.log" 2>&1
	k -n kube-system rollout status deployment/coredns --timeout=180s >>"$LOGS/rollback.log" 2>&1 ||
		step "rollback of deploy/cluster" FAIL "see rollback.log"
	sleep 10
	t6=$(date +%s)
	local image
	image=$(k -n kube-system get deployment coredns -o jsonpath='{.spec.template.spec.containers[0].image}')
	# The last second's queries have their 2 s.
	sleep 4
	dnsload_log
	WINDOW_INFO=1 window "the client's first 10 s" "$tw" "$((t0 - 1))"
	window "steady, before the rollouts" "$t0" "$((t1 - 1))"
	window "node DaemonSet rolled (maxSurge 1)" "$t1" "$((t2 - 1))"
	window "central Deployment rolled" "$t3" "$((t4 - 1))"
	window "rolled back to kubeadm's CoreDNS" "$t5" "$((t6 - 1))"
	step "rollback: stock Corefile reloaded, then rollout undo" "$([ "$reloaded" -ge 2 ] && [ "$image" = "$KUBEADM_COREDNS_IMAGE" ] && echo pass || echo FAIL)" "$reloaded of 2 pods reloaded it, image now $image, $((t6 - t5)) s"
	grep '^fail' "$LOGS/dnsload.log" | head -20 >&2 || true
}
rollouts
