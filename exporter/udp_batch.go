package exporter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Flusher is a transport that holds messages back to send them together,
// such as a UDPWriter with batching. A Collector calls Flush whenever its
// queue is empty, so batching adds no delay to a lone message.
type Flusher interface {
	// Flush sends what is held back and returns the first failure since
	// the last Flush.
	Flush() error
}

var _ Flusher = (*UDPWriter)(nil)

// DefaultUDPBatch is the batch the daemon gives its UDP collectors: 64
// messages of 1400 bytes are 90 KB, well under a default socket buffer
// (212 KB), and a 256-flow export is about a dozen messages, so an export
// and the next ones queued behind it go out in one system call.
const DefaultUDPBatch = 64

// Limits of one UDP GSO send: the kernel takes at most 64 segments (128
// since Linux 6.9) and one IP packet's worth of payload.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// mmsgBatch holds messages, copied one after the other into one buffer,
// and the sendmmsg(2) headers that point into it. Its UDPWriter's mu
// guards it.
//
// With UDP GSO (segmentation offload, Linux 4.18), one header carries a
// run of messages of the same length L, the last of the run possibly
// shorter, with a UDP_SEGMENT control message of L: the stack is crossed
// once for the run and the datagrams are cut at the end, at the message
// boundaries, so each datagram is still one whole message. Messages of
// other lengths get a header of their own.
type mmsgBatch struct {
	u    *UDPWriter // counters
	buf  []byte
	offs []int // message i is buf[offs[i]:offs[i]+lens[i]]
	lens []int
	recs []int // flow records in message i
	n    int   // messages held

	// Headers of the current send, built by build: header e carries
	// count[e] messages from first[e] on.
	hdrs    []unix.Mmsghdr
	iovs    []unix.Iovec
	oob     []byte // one UDP_SEGMENT control message per header
	first   []int
	count   []int
	entries int
	gso     bool // runs share a header

	// State of one send, read by sendFn, which RawConn.Write calls
	// again after waiting for room in the socket buffer.
	next    int   // first header not sent or failed
	refused int   // ECONNREFUSED in a row on header next
	err     error // first failure
	sendFn  func(fd uintptr) bool
}

var cmsgSpace = unix.CmsgSpace(2)

func newMmsgBatch(size int, u *UDPWriter, gso bool) *mmsgBatch {
	b := &mmsgBatch{
		u:     u,
		buf:   make([]byte, 0, size*DefaultMaxMessageSize),
		offs:  make([]int, size),
		lens:  make([]int, size),
		recs:  make([]int, size),
		hdrs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		oob:   make([]byte, size*cmsgSpace),
		first: make([]int, size),
		count: make([]int, size),
		gso:   gso,
	}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b.oob[i*cmsgSpace]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
	}
	// A method value made once: passing b.sendmmsg to RawConn.Write
	// at each send would allocate.
	b.sendFn = b.sendmmsg
	return b
}

// fits reports whether msg can join the batch without moving the buffer.
// An empty batch takes any message.
func (b *mmsgBatch) fits(n int) bool {
	return b.n == 0 || len(b.buf)+n <= cap(b.buf)
}

func (b *mmsgBatch) full() bool { return b.n == len(b.offs) }

func (b *mmsgBatch) add(msg []byte, records int) {
	b.offs[b.n], b.lens[b.n], b.recs[b.n] = len(b.buf), len(msg), records
	b.buf = append(b.buf, msg...)
	b.n++
}

func (b *mmsgBatch) reset() {
	b.buf = b.buf[:0]
	b.n = 0
	b.entries = 0
}

// build makes the headers for messages from..n-1, grouping runs if gso.
func (b *mmsgBatch) build(from int, gso bool) {
	e := 0
	for i := from; i < b.n; e++ {
		l := b.lens[i]
		j, total := i+1, l
		for gso && l > 0 && j < b.n && j-i < maxGSOSegments && total+b.lens[j] <= maxGSOBytes {
			lj := b.lens[j]
			if lj > l || lj == 0 {
				break
			}
			total += lj
			j++
			if lj < l {
				break // a shorter one ends the run
			}
		}
		h := &b.hdrs[e]
		h.Len = 0
		b.iovs[e].Base = nil
		if total > 0 {
			b.iovs[e].Base = &b.buf[b.offs[i]]
		}
		b.iovs[e].SetLen(total)
		if j-i > 1 {
			c := b.oob[e*cmsgSpace : (e+1)*cmsgSpace]
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(l))
			h.Hdr.Control = &c[0]
			h.Hdr.SetControllen(cmsgSpace)
		} else {
			h.Hdr.Control = nil
			h.Hdr.SetControllen(0)
		}
		b.first[e], b.count[e] = i, j-i
		i = j
	}
	b.entries = e
	b.next = 0
}

// send sends the batch with as few sendmmsg calls as it takes, counts
// every message (sent, lost, ICMP errors met) in b.u, empties the batch
// and returns the first failure.
func (b *mmsgBatch) send(raw syscall.RawConn, timeout time.Duration) error {
	b.build(0, b.gso)
	b.refused, b.err = 0, nil
	err := b.u.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err == nil {
		err = raw.Write(b.sendFn)
	}
	if err != nil {
		// Timed out waiting for room, or closed: the rest is lost.
		if b.next < b.entries {
			b.loseFrom(b.first[b.next])
		}
		b.err = cmp(b.err, err)
	}
	err = b.err
	b.reset()
	b.err = nil
	return err
}

// sendmmsg runs inside RawConn.Write: returning false waits until the
// socket is writable (or the deadline) and calls it again.
func (b *mmsgBatch) sendmmsg(fd uintptr) bool {
	u := b.u
	for b.next < b.entries {
		r, e := sendmmsgCall(fd, b.hdrs[b.next:b.entries])
		switch {
		case e == 0 && r > 0:
			k := int(r)
			var msgs, bytes uint64
			for i := b.next; i < b.next+k; i++ {
				msgs += uint64(b.count[i])
				bytes += uint64(b.hdrs[i].Len)
			}
			u.messages.Add(msgs)
			u.bytes.Add(bytes)
			b.next += k
			b.refused = 0
			// Short: header next met an error sendmmsg does not
			// return once it has sent something (a full socket
			// buffer, or an ICMP error for an earlier datagram,
			// cleared by being reported); the loop tries it again.
			// Only an ECONNREFUSED returned counts as unreachable:
			// a short send alone does not say which it was.
		case e == 0:
			// Nothing sent and no error: not for a non-empty batch.
			// Do not spin.
			b.loseNext(errors.New("sendmmsg sent nothing"))
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false
		case e == unix.ECONNREFUSED && b.refused < maxRefusedRetries:
			// An ICMP port unreachable for an earlier datagram,
			// cleared by being reported: this one was not sent.
			u.unreachable.Add(1)
			b.refused++
		case b.count[b.next] > 1:
			// A run refused: GSO itself may be (no offload for
			// this route, IPsec, a message over the MTU). The
			// rest goes one message per header, and if the error
			// says GSO cannot work here, so does every later
			// batch.
			if gsoRefused(e) {
				b.gso = false
			}
			b.build(b.first[b.next], false)
			b.refused = 0
		default:
			b.loseNext(os.NewSyscallError("sendmmsg", e))
		}
	}
	return true
}

// sendmmsgCall is the sendmmsg(2) system call on hdrs; tests replace it to
// script the kernel's answers.
var sendmmsgCall = func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	return int(r), e
}

// gsoRefused reports whether a UDP GSO send's error means GSO does not
// work on this socket or route.
func gsoRefused(e syscall.Errno) bool {
	switch e {
	case unix.EINVAL, unix.EIO, unix.EOPNOTSUPP, unix.ENOPROTOOPT:
		return true
	}
	return false
}

// loseNext counts the messages of header next as lost and moves past it.
func (b *mmsgBatch) loseNext(err error) {
	b.lose(b.first[b.next], b.first[b.next]+b.count[b.next])
	b.err = cmp(b.err, err)
	b.next++
	b.refused = 0
}

// lose counts messages from..to-1 and their records as lost.
func (b *mmsgBatch) lose(from, to int) {
	recs := 0
	for _, r := range b.recs[from:to] {
		recs += r
	}
	b.u.lost.Add(uint64(to - from))
	b.u.recordsLost.Add(uint64(recs))
}

// loseFrom counts the messages held from message from on as lost.
func (b *mmsgBatch) loseFrom(from int) { b.lose(from, b.n) }

// probeGSO reports whether the kernel knows UDP_SEGMENT.
func probeGSO(raw syscall.RawConn) bool {
	var err error
	cerr := raw.Control(func(fd uintptr) {
		_, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	})
	return cerr == nil && err == nil
}

// sendmmsgProbe is probeSendmmsg; tests replace it to see the fallback.
var sendmmsgProbe = probeSendmmsg

// probeSendmmsg calls sendmmsg with no message: it fails only where the
// system call is refused.
func probeSendmmsg(raw syscall.RawConn) error {
	var e syscall.Errno
	err := raw.Write(func(fd uintptr) bool {
		_, _, e = unix.Syscall6(unix.SYS_SENDMMSG, fd, 0, 0, 0, 0, 0)
		return true
	})
	if err != nil {
		return fmt.Errorf("sendmmsg probe: %w", err)
	}
	if e != 0 {
		return os.NewSyscallError("sendmmsg", e)
	}
	return nil
}
