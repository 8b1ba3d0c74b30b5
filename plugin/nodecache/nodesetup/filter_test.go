package nodesetup

import (
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestNftTableName(t *testing.T) {
	if got := nftTableName(1); got != "nodecache_1" {
		t.Errorf("nftTableName(1) = %q", got)
	}
	// A port ID the kernel picks once the PID is taken is negative as an int32.
	if got := nftTableName(0xfffff001); got != "nodecache_4294963201" {
		t.Errorf("nftTableName(0xfffff001) = %q", got)
	}
}

// Two owners in one network namespace get two names, even when they share a PID (every
// container's first process is PID 1): the name comes from the netlink socket, not the PID.
// Two sockets of one process reproduce that: the kernel offers both the same PID first.
func TestNftTableNameUniquePerSocket(t *testing.T) {
	var names []string
	for range 2 {
		sock, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
		if err != nil {
			t.Skipf("no netfilter netlink socket here: %v", err)
		}
		defer sock.Close()
		id, err := netlinkPortID(sock)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, nftTableName(id))
	}
	if names[0] == names[1] {
		t.Fatalf("two live netlink sockets, one table name %q", names[0])
	}
	t.Logf("table names: %v", names)
}
