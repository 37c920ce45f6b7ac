package main

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

type iface struct {
	index int
	name  string
}

// selectInterfaces lists the links the rules select. A name given exactly
// must exist; patterns may match nothing.
func selectInterfaces(rules ifaceRules) ([]iface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []iface
	seen := map[string]bool{}
	for _, l := range links {
		a := l.Attrs()
		seen[a.Name] = true
		if rules.empty() {
			if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 {
				continue
			}
		} else if !rules.match(a.Name) {
			continue
		}
		out = append(out, iface{index: a.Index, name: a.Name})
	}
	for _, n := range rules.names {
		if !seen[n] {
			return nil, fmt.Errorf("interface %q: no such link", n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no interface selected")
	}
	return out, nil
}
