package nodesetup

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureLink makes the interface carry the listen addresses: it creates a dummy interface of
// that name or adopts an existing one, brings it up and adds the addresses it does not carry
// yet, even when another interface has them too: NodeLocal DNSCache's node-cache deletes its
// interface (and with it the address) when it exits, which must not take the address from us
// during a migration. It reports whether it created the interface and which addresses it added.
func ensureLink(name string, ips []net.IP) (created bool, added []net.IP, err error) {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return false, nil, fmt.Errorf("create dummy interface %s: %w (no dummy driver? pre-create it, e.g. `ip link add %s type bridge`)", name, err, name)
		}
		created = true
		if link, err = netlink.LinkByName(name); err != nil {
			return created, nil, fmt.Errorf("find interface %s after creating it: %w", name, err)
		}
	} else if err != nil {
		return false, nil, fmt.Errorf("find interface %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return created, nil, fmt.Errorf("bring interface %s up: %w", name, err)
	}
	for _, ip := range ips {
		if present, err := addressOn(link, ip); err != nil {
			return created, added, err
		} else if present {
			continue
		}
		addr := &netlink.Addr{IPNet: hostNet(ip)}
		if ip.To4() == nil {
			// No duplicate address detection: the address is usable (bindable) at once.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return created, added, fmt.Errorf("add %s to %s: %w", ip, name, err)
		}
		added = append(added, ip)
	}
	return created, added, nil
}

// addressOn reports whether the interface carries ip.
func addressOn(link netlink.Link, ip net.IP) (bool, error) {
	family := netlink.FAMILY_V6
	if ip.To4() != nil {
		family = netlink.FAMILY_V4
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return false, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return true, nil
		}
	}
	return false, nil
}

// removeLink undoes ensureLink: the addresses it added, and the interface if it created it.
func removeLink(name string, created bool, added []net.IP) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	if created {
		if err := netlink.LinkDel(link); err != nil {
			return fmt.Errorf("delete interface %s: %w", name, err)
		}
		return nil
	}
	var errs []error
	for _, ip := range added {
		if err := netlink.AddrDel(link, &netlink.Addr{IPNet: hostNet(ip)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", ip, name, err))
		}
	}
	return errors.Join(errs...)
}

func hostNet(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

// stillTrue keeps of a recorded linkState only what the host still shows: a dummy interface of
// that name, addresses on it. A state left by instances that are gone may describe another
// namespace that happened to have the same inode number.
func stillTrue(st linkState, name string) linkState {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return linkState{}
	}
	kept := linkState{Created: st.Created && link.Type() == "dummy"}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return kept
	}
	for _, s := range st.Added {
		ip := net.ParseIP(s)
		for _, a := range addrs {
			if a.IP.Equal(ip) {
				kept.Added = append(kept.Added, s)
				break
			}
		}
	}
	return kept
}
