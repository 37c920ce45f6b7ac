package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nlaTypeMask strips the nested and byte-order flags off an attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)

// ctGetter looks conntrack entries up one tuple at a time
// (IPCTNL_MSG_CT_GET), which the netlink library does not offer, on its
// own netfilter socket opened in the enricher's namespace.
//
// The kernel finds an entry by either of its tuples, so a flow of either
// direction finds its connection. ICMP cannot be looked up this way: the
// kernel needs the echo id, which the flow key does not have.
type ctGetter struct {
	sock *nl.NetlinkSocket
	pid  uint32
	seq  uint32
}

func newCTGetter(ns netns.NsHandle) (*ctGetter, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(5e9)
	if err := s.SetReceiveTimeout(&tv); err != nil {
		s.Close()
		return nil, err
	}
	pid, err := s.GetPid()
	if err != nil {
		s.Close()
		return nil, err
	}
	return &ctGetter{sock: s, pid: pid}, nil
}

func (g *ctGetter) close() { g.sock.Close() }

// roundTrip sends req and returns the payload of its answer, or the
// errno the kernel answered with. (The library's Execute on a socket of
// one's own waits forever here; the exchange is simple enough to do.)
func (g *ctGetter) roundTrip(req *nl.NetlinkRequest) ([]byte, error) {
	g.seq++
	req.Seq = g.seq
	if err := g.sock.Send(req); err != nil {
		return nil, err
	}
	for {
		msgs, from, err := g.sock.Receive()
		if err != nil {
			return nil, err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq || m.Header.Pid != g.pid {
				continue // an answer to an earlier, timed-out request
			}
			if m.Header.Type == unix.NLMSG_ERROR {
				if len(m.Data) < 4 {
					return nil, fmt.Errorf("conntrack get: short error message")
				}
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return nil, unix.Errno(-errno)
				}
				return nil, fmt.Errorf("conntrack get: acknowledged without an answer")
			}
			return m.Data, nil
		}
	}
}

// get returns the original and reply tuples of the connection t belongs
// to, and false if conntrack has none.
func (g *ctGetter) get(t Tuple) (orig, reply Tuple, ok bool, err error) {
	if !hasPorts(t.Proto) {
		return orig, reply, false, nil
	}
	fam, srcType, dstType := uint8(unix.AF_INET), nl.CTA_IP_V4_SRC, nl.CTA_IP_V4_DST
	if !t.Src.Is4() {
		fam, srcType, dstType = unix.AF_INET6, nl.CTA_IP_V6_SRC, nl.CTA_IP_V6_DST
	}
	req := nl.NewNetlinkRequest((unix.NFNL_SUBSYS_CTNETLINK<<8)|nl.IPCTNL_MSG_CT_GET, 0)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0})
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	ip.AddRtAttr(srcType, t.Src.AsSlice())
	ip.AddRtAttr(dstType, t.Dst.AsSlice())
	proto := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	proto.AddRtAttr(nl.CTA_PROTO_NUM, []byte{t.Proto})
	proto.AddRtAttr(nl.CTA_PROTO_SRC_PORT, nl.BEUint16Attr(t.SrcPort))
	proto.AddRtAttr(nl.CTA_PROTO_DST_PORT, nl.BEUint16Attr(t.DstPort))
	req.AddData(tuple)
	msg, err := g.roundTrip(req)
	if errors.Is(err, unix.ENOENT) {
		return orig, reply, false, nil
	}
	if err != nil {
		return orig, reply, false, err
	}
	orig, reply, err = parseCTTuples(msg)
	return orig, reply, err == nil, err
}

// parseCTTuples reads the original and reply tuples of one ctnetlink
// message (nfgenmsg, then attributes).
func parseCTTuples(msg []byte) (orig, reply Tuple, err error) {
	if len(msg) < 4 {
		return orig, reply, fmt.Errorf("conntrack message of %d bytes", len(msg))
	}
	attrs, err := nl.ParseRouteAttr(msg[4:])
	if err != nil {
		return orig, reply, err
	}
	var found int
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case nl.CTA_TUPLE_ORIG:
			orig, err = parseCTTuple(a.Value)
			found++
		case nl.CTA_TUPLE_REPLY:
			reply, err = parseCTTuple(a.Value)
			found++
		}
		if err != nil {
			return orig, reply, err
		}
	}
	if found != 2 {
		return orig, reply, fmt.Errorf("conntrack message without both tuples")
	}
	return orig, reply, nil
}

func parseCTTuple(b []byte) (Tuple, error) {
	var t Tuple
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return t, err
	}
	for _, a := range attrs {
		inner, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return t, err
		}
		switch a.Attr.Type & nlaTypeMask {
		case nl.CTA_TUPLE_IP:
			for _, x := range inner {
				addr, _ := netip.AddrFromSlice(x.Value)
				switch x.Attr.Type {
				case nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC:
					t.Src = addr
				case nl.CTA_IP_V4_DST, nl.CTA_IP_V6_DST:
					t.Dst = addr
				}
			}
		case nl.CTA_TUPLE_PROTO:
			for _, x := range inner {
				switch {
				case x.Attr.Type == nl.CTA_PROTO_NUM && len(x.Value) >= 1:
					t.Proto = x.Value[0]
				case x.Attr.Type == nl.CTA_PROTO_SRC_PORT && len(x.Value) >= 2:
					t.SrcPort = binary.BigEndian.Uint16(x.Value)
				case x.Attr.Type == nl.CTA_PROTO_DST_PORT && len(x.Value) >= 2:
					t.DstPort = binary.BigEndian.Uint16(x.Value)
				}
			}
		}
	}
	if !t.Src.IsValid() || !t.Dst.IsValid() {
		return t, fmt.Errorf("conntrack tuple without addresses")
	}
	return t, nil
}

// ctCounter reads the namespace's nf_conntrack_count through a file opened
// in it (a /proc/sys/net file belongs to the namespace of its opener).
type ctCounter struct{ f *os.File }

// newCTCounter opens the counter; nil if conntrack is not loaded.
func newCTCounter() *ctCounter {
	f, err := os.Open("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return nil
	}
	return &ctCounter{f: f}
}

// count returns the number of conntrack entries, -1 if unknown.
func (c *ctCounter) count() int {
	if c == nil {
		return -1
	}
	var b [32]byte
	n, err := c.f.ReadAt(b[:], 0)
	if n == 0 && err != nil {
		return -1
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return -1
	}
	return v
}

func (c *ctCounter) close() {
	if c != nil {
		c.f.Close()
	}
}
