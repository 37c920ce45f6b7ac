package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildHostflow builds the daemon into a temporary directory, static
// (CGO_ENABLED=0) like `make build` and the package, so that the memory
// and load tests measure the daemon that ships.
func buildHostflow(t *testing.T) string {
	t.Helper()
	// go test puts its own GOROOT/bin first on the PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("build hostflow: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "hostflow")
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/hostflow/hostflow/cmd/hostflow")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build hostflow: %v\n%s", err, out)
	}
	return bin
}

// daemonArgs returns args with what keeps a test's hostflow hermetic: no
// config file (an installed /etc/hostflow/hostflow.yaml must not leak in),
// its own state directory and control socket, and no metrics listener.
func daemonArgs(t *testing.T, args ...string) []string {
	t.Helper()
	return append([]string{"--config", "/dev/null", "--state-dir", t.TempDir(), "--metrics-enabled=false",
		"--control-socket", filepath.Join(t.TempDir(), "ctl.sock")}, args...)
}

// process is a started command that the test stops and reaps, whatever
// happens.
type process struct {
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan error
}

func start(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, output: newLockedBuffer(), done: make(chan error, 1)}
	cmd.Stdout = p.output
	cmd.Stderr = p.output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %v:\n%s", cmd.Args, p.output.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits up to limit for a clean exit.
func (p *process) stop(t *testing.T, limit time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal %v: %v", p.cmd.Args, err)
	}
	select {
	case err := <-p.done:
		p.done <- err // let Cleanup see it has ended
		if err != nil {
			t.Fatalf("%v exited: %v\n%s", p.cmd.Args, err, p.output.String())
		}
	case <-time.After(limit):
		t.Fatalf("%v did not stop within %v\n%s", p.cmd.Args, limit, p.output.String())
	}
}

// waitOutput waits until the output contains s.
func (p *process) waitOutput(t *testing.T, s string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if strings.Contains(p.output.String(), s) {
			return
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%v exited (%v) before printing %q:\n%s", p.cmd.Args, err, s, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%v did not print %q within %v:\n%s", p.cmd.Args, s, limit, p.output.String())
}

// udpEcho sends n datagrams of size bytes from a to b's echo server and
// waits for every echo. It returns the client's and server's ports.
func udpEcho(t *testing.T, a, b *namespace, srcIP, dstIP string, n, size int) (cport, sport int) {
	t.Helper()
	var srv net.PacketConn
	b.do(t, func() (err error) {
		srv, err = net.ListenPacket("udp", net.JoinHostPort(dstIP, "0"))
		return err
	})
	defer srv.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			k, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:k], from)
		}
	}()
	sport = srv.LocalAddr().(*net.UDPAddr).Port
	var c net.Conn
	a.do(t, func() (err error) {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(srcIP)}}
		c, err = d.Dial("udp", net.JoinHostPort(dstIP, fmt.Sprint(sport)))
		return err
	})
	defer c.Close()
	payload := make([]byte, size)
	reply := make([]byte, 65536)
	for i := 0; i < n; i++ {
		if _, err := c.Write(payload); err != nil {
			t.Fatalf("udp send: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(reply); err != nil {
			t.Fatalf("udp echo %d: %v", i, err)
		}
	}
	return c.LocalAddr().(*net.UDPAddr).Port, sport
}

// tcpTransfer sends size bytes from a to b over one TCP connection and
// waits for an orderly close. It returns the client's and server's ports.
func tcpTransfer(t *testing.T, a, b *namespace, srcIP, dstIP string, size int) (cport, sport int) {
	t.Helper()
	var ln net.Listener
	b.do(t, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(dstIP, "0"))
		return err
	})
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, conn)
		conn.Close()
		got <- n
	}()
	sport = ln.Addr().(*net.TCPAddr).Port
	var c net.Conn
	a.do(t, func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}, Timeout: 5 * time.Second}
		c, err = d.Dial("tcp", net.JoinHostPort(dstIP, fmt.Sprint(sport)))
		return err
	})
	defer c.Close()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatalf("tcp write: %v", err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("tcp wait for close: %v", err)
	}
	select {
	case n := <-got:
		if n != int64(size) {
			t.Fatalf("tcp server got %d bytes, want %d", n, size)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tcp server did not finish")
	}
	return c.LocalAddr().(*net.TCPAddr).Port, sport
}

// nfdumpFile returns the one finished nfcapd file in dir.
func nfdumpFile(t *testing.T, dir string) string {
	t.Helper()
	var files []string
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasPrefix(info.Name(), "nfcapd.") && !strings.Contains(info.Name(), "current") {
			files = append(files, path)
		}
		return err
	})
	if err != nil || len(files) != 1 {
		t.Fatalf("nfcapd files in %s: %v %v", dir, files, err)
	}
	return files[0]
}

// lines returns the lines of s that contain substr.
func lines(s, substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}
