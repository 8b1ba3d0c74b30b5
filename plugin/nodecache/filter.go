package nodecache

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// listenPort is one address and port the node cache serves; its DNS traffic skips conntrack,
// so a busy node's conntrack table neither races (the UDP insert race behind 5 s lookups) nor
// fills up with DNS flows.
type listenPort struct {
	ip   net.IP
	port uint16
}

// packetFilter installs the notrack rules for the listen ports.
type packetFilter interface {
	add(ports []listenPort) error
	// remove takes the rules out; last says no other instance uses them any more.
	remove(last bool) error
}

func newPacketFilter(mode string, keep bool) (packetFilter, error) {
	switch mode {
	case filterNftables:
		return newNftFilter(keep)
	case filterIptables:
		return &iptFilter{keep: keep}, nil
	default:
		return noFilter{}, nil
	}
}

type noFilter struct{}

func (noFilter) add([]listenPort) error { return nil }
func (noFilter) remove(bool) error      { return nil }

// nftTableOwner is NFT_TABLE_F_OWNER: the table belongs to the netlink socket that made it and
// the kernel deletes it when that socket closes, so even SIGKILL or OOM leaves no rules behind.
const nftTableOwner = 0x2

// nftFilter keeps a table of its own (inet family: IPv4 and IPv6 together). Each process has
// its own table, so two instances during a handover never touch each other's rules.
type nftFilter struct {
	conn  *nftables.Conn // lasting: its socket owns the table
	table *nftables.Table
	pre   *nftables.Chain
	out   *nftables.Chain
	have  map[string]bool
	keep  bool
}

func newNftFilter(keep bool) (*nftFilter, error) {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	f := &nftFilter{conn: conn, have: map[string]bool{}, keep: keep}
	name, flags := fmt.Sprintf("nodecache_%d", os.Getpid()), uint32(nftTableOwner)
	if keep {
		// A table meant to outlive the process cannot be owned by it.
		name, flags = "nodecache", 0
		if t, err := conn.ListTableOfFamily(name, nftables.TableFamilyINet); err == nil && t != nil {
			conn.DelTable(t)
		}
	}
	f.table = conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name, Flags: flags})
	f.pre = conn.AddChain(&nftables.Chain{Name: "prerouting", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	f.out = conn.AddChain(&nftables.Chain{Name: "output", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw})
	if err := conn.Flush(); err != nil {
		conn.CloseLasting()
		return nil, fmt.Errorf("nftables: create table inet %s: %w", name, err)
	}
	return f, nil
}

func (f *nftFilter) add(ports []listenPort) error {
	added := 0
	for _, p := range ports {
		key := net.JoinHostPort(p.ip.String(), strconv.Itoa(int(p.port)))
		if f.have[key] {
			continue
		}
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			// Queries in, answers out, and queries from the node itself (hostNetwork pods).
			f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: f.pre, Exprs: notrackExprs(p, proto, true)})
			f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: f.out, Exprs: notrackExprs(p, proto, false)})
			f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: f.out, Exprs: notrackExprs(p, proto, true)})
		}
		f.have[key] = true
		added++
	}
	if added == 0 {
		return nil
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: add notrack rules to inet %s: %w", f.table.Name, err)
	}
	return nil
}

// notrackExprs matches DNS to (toListen) or from the listen port and skips conntrack.
func notrackExprs(p listenPort, proto byte, toListen bool) []expr.Any {
	nfproto, addr, addrOff := byte(unix.NFPROTO_IPV6), []byte(p.ip.To16()), uint32(8)
	if v4 := p.ip.To4(); v4 != nil {
		nfproto, addr, addrOff = unix.NFPROTO_IPV4, v4, 12
	}
	portOff := uint32(0) // source port
	if toListen {
		addrOff += uint32(len(addr)) // destination address follows the source address
		portOff = 2
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: uint32(len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.port)},
		&expr.Notrack{},
	}
}

// remove deletes the process's own table (other instances have theirs). With keep_on_exit the
// shared table stays.
func (f *nftFilter) remove(bool) error {
	defer f.conn.CloseLasting()
	if f.keep {
		return nil
	}
	f.conn.DelTable(f.table)
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table inet %s: %w", f.table.Name, err)
	}
	return nil
}

// iptFilter puts the same rules in the raw table through iptables and ip6tables. Those rules
// are shared by every instance, so only the last one to leave removes them.
type iptFilter struct {
	keep  bool
	rules [][]string
}

func iptRules(p listenPort) (bin string, rules [][]string) {
	bin, host := "iptables", p.ip.String()+"/32"
	if p.ip.To4() == nil {
		bin, host = "ip6tables", p.ip.String()+"/128"
	}
	port := strconv.Itoa(int(p.port))
	for _, proto := range []string{"udp", "tcp"} {
		tail := []string{"-m", "comment", "--comment", "nodecache", "-j", "CT", "--notrack"}
		rules = append(rules,
			append([]string{"PREROUTING", "-d", host, "-p", proto, "--dport", port}, tail...),
			append([]string{"OUTPUT", "-s", host, "-p", proto, "--sport", port}, tail...),
			append([]string{"OUTPUT", "-d", host, "-p", proto, "--dport", port}, tail...))
	}
	return bin, rules
}

func (f *iptFilter) add(ports []listenPort) error {
	for _, p := range ports {
		bin, rules := iptRules(p)
		for _, r := range rules {
			// Present already (another instance's): ours too now, removed by the last to leave.
			if ipt(bin, "-C", r) != nil {
				if err := ipt(bin, "-A", r); err != nil {
					return err
				}
			}
			f.rules = append(f.rules, append([]string{bin}, r...))
		}
	}
	return nil
}

func (f *iptFilter) remove(last bool) error {
	if f.keep || !last {
		return nil
	}
	var errs []error
	for _, r := range f.rules {
		errs = append(errs, ipt(r[0], "-D", r[1:]))
	}
	return errors.Join(errs...)
}

func ipt(bin, op string, rule []string) error {
	args := append([]string{"-w", "5", "-t", "raw", op}, rule...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
