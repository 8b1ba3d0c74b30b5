package nodesetup

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
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
	// repair puts back the rules someone removed since add, and says how many.
	repair() (int, error)
	// remove takes the rules out; last says no other instance uses them any more.
	remove(last bool) error
}

func newPacketFilter(mode string, keep bool) (packetFilter, error) {
	switch mode {
	case FilterNftables:
		return newNftFilter(keep)
	case FilterIptables:
		return &iptFilter{keep: keep}, nil
	default:
		return noFilter{}, nil
	}
}

type noFilter struct{}

func (noFilter) add([]listenPort) error { return nil }
func (noFilter) repair() (int, error)   { return 0, nil }
func (noFilter) remove(bool) error      { return nil }

// nftTableOwner is NFT_TABLE_F_OWNER: the table belongs to the netlink socket that made it and
// the kernel deletes it when that socket closes, so even SIGKILL or OOM leaves no rules behind.
const nftTableOwner = 0x2

// nftFilter keeps a table of its own (inet family: IPv4 and IPv6 together). Each process has
// its own table, named after its netlink port ID (nftTableName), so two instances during a
// handover never touch each other's rules. The
// messages are built here because the owner flag must be set on the table and every later
// change must come from the same socket; the expressions are marshalled by google/nftables.
type nftFilter struct {
	sock  *netlink.Conn // owns the table for the life of the process
	table string
	have  map[string]bool
	ports []listenPort // what add was asked for, in order, for repair
	keep  bool
}

// rulesPerPort is how many rules add puts in for one listen port: queries in, answers out and
// queries from the node itself, for UDP and TCP.
const rulesPerPort = 6

func newNftFilter(keep bool) (*nftFilter, error) {
	sock, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nftables: open netlink socket: %w", err)
	}
	f := &nftFilter{sock: sock, have: map[string]bool{}, keep: keep}
	portID, err := netlinkPortID(sock)
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	f.table = nftTableName(portID)
	if keep {
		// A table meant to outlive the process cannot be owned by it: one shared table,
		// made anew by whichever instance starts.
		f.table = "nodecache"
		f.batch(nftMsg(unix.NFT_MSG_DELTABLE, 0, attrs(strAttr(unix.NFTA_TABLE_NAME, f.table))))
	}
	if err := f.createTable(); err != nil {
		sock.Close()
		return nil, err
	}
	if keep {
		log.Infof("nftables: table inet %s (shared, kept on exit)", f.table)
	} else {
		log.Infof("nftables: table inet %s (owned by this process)", f.table)
	}
	return f, nil
}

// createTable makes the table and its two chains (hooks prerouting and output at the raw
// table's priority).
func (f *nftFilter) createTable() error {
	flags := uint32(nftTableOwner)
	if f.keep {
		flags = 0
	}
	msgs := []netlink.Message{nftMsg(unix.NFT_MSG_NEWTABLE, netlink.Create, attrs(
		strAttr(unix.NFTA_TABLE_NAME, f.table),
		netlink.Attribute{Type: unix.NFTA_TABLE_FLAGS, Data: binaryutil.BigEndian.PutUint32(flags)}))}
	for _, c := range []struct {
		name string
		hook uint32
	}{{"prerouting", unix.NF_INET_PRE_ROUTING}, {"output", unix.NF_INET_LOCAL_OUT}} {
		hook := attrs(
			netlink.Attribute{Type: unix.NFTA_HOOK_HOOKNUM, Data: binaryutil.BigEndian.PutUint32(c.hook)},
			netlink.Attribute{Type: unix.NFTA_HOOK_PRIORITY, Data: binaryutil.BigEndian.PutUint32(uint32(priorityRaw))})
		msgs = append(msgs, nftMsg(unix.NFT_MSG_NEWCHAIN, netlink.Create, attrs(
			strAttr(unix.NFTA_CHAIN_TABLE, f.table),
			strAttr(unix.NFTA_CHAIN_NAME, c.name),
			netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_CHAIN_HOOK, Data: hook},
			strAttr(unix.NFTA_CHAIN_TYPE, "filter"))))
	}
	if err := f.batch(msgs...); err != nil {
		return fmt.Errorf("nftables: create table inet %s: %w", f.table, err)
	}
	return nil
}

// nftTableName names the process's own table after the port ID of the netlink socket that owns
// it. The kernel keeps port IDs unique within a network namespace for as long as their sockets
// live, and the table lives exactly as long as that socket, so two instances sharing a network
// namespace never pick the same name, whatever their PID namespaces (in containers every
// instance is PID 1, and the PID, the kernel's first choice of port ID, is taken by the first
// one; the second gets another ID).
func nftTableName(portID uint32) string { return fmt.Sprintf("nodecache_%d", portID) }

// netlinkPortID is the port ID the kernel bound the socket to.
func netlinkPortID(sock *netlink.Conn) (uint32, error) {
	rc, err := sock.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if serr != nil || !ok {
		return 0, fmt.Errorf("netlink socket address: %v (%T)", serr, sa)
	}
	return nl.Pid, nil
}

// priorityRaw is the raw table's hook priority (NF_IP_PRI_RAW): before conntrack sees a packet.
var priorityRaw int32 = -300

func (f *nftFilter) add(ports []listenPort) error {
	var msgs []netlink.Message
	for _, p := range ports {
		key := net.JoinHostPort(p.ip.String(), strconv.Itoa(int(p.port)))
		if f.have[key] {
			continue
		}
		f.ports = append(f.ports, p)
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			// Queries in, answers out, and queries from the node itself (hostNetwork pods).
			for _, r := range []struct {
				chain    string
				toListen bool
			}{{"prerouting", true}, {"output", false}, {"output", true}} {
				m, err := f.rule(r.chain, notrackExprs(p, proto, r.toListen))
				if err != nil {
					return err
				}
				msgs = append(msgs, m)
			}
		}
		f.have[key] = true
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := f.batch(msgs...); err != nil {
		return fmt.Errorf("nftables: add notrack rules to inet %s: %w", f.table, err)
	}
	return nil
}

func (f *nftFilter) rule(chain string, exprs []expr.Any) (netlink.Message, error) {
	var list []netlink.Attribute
	for _, e := range exprs {
		b, err := expr.Marshal(byte(unix.NFPROTO_INET), e)
		if err != nil {
			return netlink.Message{}, fmt.Errorf("nftables: marshal expression: %w", err)
		}
		list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
	}
	return nftMsg(unix.NFT_MSG_NEWRULE, netlink.Create|netlink.Append, attrs(
		strAttr(unix.NFTA_RULE_TABLE, f.table),
		strAttr(unix.NFTA_RULE_CHAIN, chain),
		netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: attrs(list...)})), nil
}

// batch sends the messages as one nfnetlink transaction and collects every acknowledgement.
func (f *nftFilter) batch(msgs ...netlink.Message) error {
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	all := append([]netlink.Message{{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: hdr}},
		msgs...)
	all = append(all, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request}, Data: hdr})
	if _, err := f.sock.SendMessages(all); err != nil {
		return err
	}
	var errs []error
	for range msgs {
		if _, err := f.sock.Receive(); err != nil {
			errs = append(errs, err)
			if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.ENOBUFS) {
				break // the kernel sends one error for the whole batch then
			}
		}
	}
	return errors.Join(errs...)
}

func nftMsg(typ int, flags netlink.HeaderFlags, data []byte) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, data...),
	}
}

func attrs(a ...netlink.Attribute) []byte {
	b, err := netlink.MarshalAttributes(a)
	if err != nil {
		panic(err) // only for attributes over 64 KiB, which these never are
	}
	return b
}

func strAttr(typ uint16, s string) netlink.Attribute {
	return netlink.Attribute{Type: typ, Data: []byte(s + "\x00")}
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

// repair counts the rules in the table and, when some are missing (the shared table of
// keep_on_exit deleted or flushed by someone else; an owned table refuses changes from other
// sockets), makes the table again with every rule.
func (f *nftFilter) repair() (int, error) {
	want := rulesPerPort * len(f.ports)
	have, err := f.countRules()
	if err == nil && have >= want {
		return 0, nil
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return 0, fmt.Errorf("nftables: list rules of inet %s: %w", f.table, err)
	}
	// Start clean: delete what is left (ENOENT when the table is gone), then make it all again.
	f.batch(nftMsg(unix.NFT_MSG_DELTABLE, 0, attrs(strAttr(unix.NFTA_TABLE_NAME, f.table))))
	if err := f.createTable(); err != nil {
		return 0, err
	}
	ports := f.ports
	f.ports, f.have = nil, map[string]bool{}
	if err := f.add(ports); err != nil {
		return 0, err
	}
	return want - have, nil
}

// countRules lists the rules of the table (an NFT_MSG_GETRULE dump).
func (f *nftFilter) countRules() (int, error) {
	req := nftMsg(unix.NFT_MSG_GETRULE, netlink.Dump, attrs(strAttr(unix.NFTA_RULE_TABLE, f.table)))
	req.Header.Flags &^= netlink.Acknowledge
	msgs, err := f.sock.Execute(req)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range msgs {
		if m.Header.Type == netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE) {
			n++
		}
	}
	return n, nil
}

// remove deletes the process's own table (other instances have theirs) and closes the socket
// that owns it. With keep_on_exit the shared table stays.
func (f *nftFilter) remove(bool) error {
	defer f.sock.Close()
	if f.keep {
		return nil
	}
	if err := f.batch(nftMsg(unix.NFT_MSG_DELTABLE, 0, attrs(strAttr(unix.NFTA_TABLE_NAME, f.table)))); err != nil {
		return fmt.Errorf("nftables: delete table inet %s: %w", f.table, err)
	}
	return nil
}

// iptFilter puts the same rules in the raw table through iptables and ip6tables, and accept
// rules at the top of the filter table's INPUT and OUTPUT chains: the packets skip conntrack, so
// a host firewall that drops by default and accepts only established flows would drop them.
// Those rules are shared by every instance, so only the last one to leave removes them.
type iptFilter struct {
	keep  bool
	rules []iptRule
}

// iptRule is one rule: the program (iptables or ip6tables), its table, and the chain and match.
type iptRule struct {
	bin, table string
	insert     bool // at the top of the chain (-I), not the end (-A)
	spec       []string
}

func iptRules(p listenPort) []iptRule {
	bin, host := "iptables", p.ip.String()+"/32"
	if p.ip.To4() == nil {
		bin, host = "ip6tables", p.ip.String()+"/128"
	}
	port := strconv.Itoa(int(p.port))
	var rules []iptRule
	for _, proto := range []string{"udp", "tcp"} {
		notrack := []string{"-m", "comment", "--comment", "nodecache", "-j", "CT", "--notrack"}
		accept := []string{"-m", "comment", "--comment", "nodecache", "-j", "ACCEPT"}
		rules = append(rules,
			iptRule{bin, "raw", false, append([]string{"PREROUTING", "-d", host, "-p", proto, "--dport", port}, notrack...)},
			iptRule{bin, "raw", false, append([]string{"OUTPUT", "-s", host, "-p", proto, "--sport", port}, notrack...)},
			iptRule{bin, "raw", false, append([]string{"OUTPUT", "-d", host, "-p", proto, "--dport", port}, notrack...)},
			iptRule{bin, "filter", true, append([]string{"INPUT", "-d", host, "-p", proto, "--dport", port}, accept...)},
			iptRule{bin, "filter", true, append([]string{"OUTPUT", "-s", host, "-p", proto, "--sport", port}, accept...)})
	}
	return rules
}

func (f *iptFilter) add(ports []listenPort) error {
	for _, p := range ports {
		for _, r := range iptRules(p) {
			// Present already (another instance's): ours too now, removed by the last to leave.
			if _, err := r.ensure(); err != nil {
				return err
			}
			f.rules = append(f.rules, r)
		}
	}
	return nil
}

// ensure adds the rule unless it is there; added says it was missing.
func (r iptRule) ensure() (added bool, err error) {
	if ipt(r.bin, r.table, "-C", r.spec) == nil {
		return false, nil
	}
	op := "-A"
	if r.insert {
		op = "-I"
	}
	return true, ipt(r.bin, r.table, op, r.spec)
}

// repair adds back every rule that is gone (kube-proxy, a firewall reload or an operator may
// flush the chains).
func (f *iptFilter) repair() (int, error) {
	n := 0
	var errs []error
	for _, r := range f.rules {
		added, err := r.ensure()
		if added && err == nil {
			n++
		}
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

func (f *iptFilter) remove(last bool) error {
	if f.keep || !last {
		return nil
	}
	var errs []error
	for _, r := range f.rules {
		errs = append(errs, ipt(r.bin, r.table, "-D", r.spec))
	}
	return errors.Join(errs...)
}

func ipt(bin, table, op string, rule []string) error {
	args := append([]string{"-w", "5", "-t", table, op}, rule...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
