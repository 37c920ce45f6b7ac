package exporter

import (
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

// mmsgBatch holds messages, copied into one buffer, and the sendmmsg(2)
// headers that point into it. Its UDPWriter's mu guards it.
type mmsgBatch struct {
	u    *UDPWriter // counters
	buf  []byte
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	n    int // messages held

	// State of one send, read by sendFn, which RawConn.Write calls
	// again after waiting for room in the socket buffer.
	next    int   // first message not sent or failed
	refused int   // ECONNREFUSED in a row on message next
	stale   bool  // sendmmsg stopped at next on an error it swallowed
	err     error // first failure
	sendFn  func(fd uintptr) bool
}

func newMmsgBatch(size int, u *UDPWriter) *mmsgBatch {
	b := &mmsgBatch{
		u:    u,
		buf:  make([]byte, 0, size*DefaultMaxMessageSize),
		hdrs: make([]unix.Mmsghdr, size),
		iovs: make([]unix.Iovec, size),
	}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	// A method value made once: passing b.sendmmsg to RawConn.Write
	// at each send would allocate.
	b.sendFn = b.sendmmsg
	return b
}

// fits reports whether msg can join the batch without moving the buffer,
// whose addresses the headers hold. An empty batch takes any message.
func (b *mmsgBatch) fits(n int) bool {
	return b.n == 0 || len(b.buf)+n <= cap(b.buf)
}

func (b *mmsgBatch) full() bool { return b.n == len(b.hdrs) }

func (b *mmsgBatch) add(msg []byte) {
	off := len(b.buf)
	b.buf = append(b.buf, msg...)
	if len(msg) == 0 {
		b.iovs[b.n].Base = nil
	} else {
		b.iovs[b.n].Base = &b.buf[off]
	}
	b.iovs[b.n].SetLen(len(msg))
	b.n++
}

func (b *mmsgBatch) reset() {
	b.buf = b.buf[:0]
	b.n = 0
}

// send sends the batch with as few sendmmsg calls as it takes, counts
// every message (sent, lost, ICMP errors met) in b.u, empties the batch
// and returns the first failure.
func (b *mmsgBatch) send(raw syscall.RawConn, timeout time.Duration) error {
	b.next, b.refused, b.stale, b.err = 0, 0, false, nil
	err := b.u.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err == nil {
		err = raw.Write(b.sendFn)
	}
	if err != nil {
		// Timed out waiting for room, or closed: the rest is lost.
		b.u.lost.Add(uint64(b.n - b.next))
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
	for b.next < b.n {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.next])), uintptr(b.n-b.next), 0, 0, 0)
		switch {
		case e == 0 && r > 0:
			k := int(r)
			var bytes uint64
			for i := b.next; i < b.next+k; i++ {
				bytes += uint64(b.hdrs[i].Len)
			}
			u.messages.Add(uint64(k))
			u.bytes.Add(bytes)
			if b.stale {
				// The error that stopped the last call is gone:
				// it was pending on the socket, an ICMP error for
				// an earlier datagram, reported (and cleared) in
				// place of sending this one.
				u.unreachable.Add(1)
			}
			b.next += k
			b.refused = 0
			// Short: message next met an error sendmmsg does not
			// return once it has sent something; try it again.
			b.stale = b.next < b.n
		case e == 0:
			// Nothing sent and no error: not for a non-empty batch.
			// Do not spin.
			b.loseNext(errors.New("sendmmsg sent nothing"))
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			b.stale = false
			return false
		case e == unix.ECONNREFUSED && b.refused < maxRefusedRetries:
			// An ICMP port unreachable for an earlier datagram,
			// cleared by being reported: this one was not sent.
			u.unreachable.Add(1)
			b.refused++
			b.stale = false
		default:
			b.loseNext(os.NewSyscallError("sendmmsg", e))
		}
	}
	return true
}

// loseNext counts message next as lost and moves past it.
func (b *mmsgBatch) loseNext(err error) {
	b.u.lost.Add(1)
	b.err = cmp(b.err, err)
	b.next++
	b.refused = 0
	b.stale = false
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
