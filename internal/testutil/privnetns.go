package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PrivateNetnsEnv marks a test process that RunInPrivateNetns already moved
// into a network namespace of its own. Its value is the inode number of the
// namespace the process was started in, which the private one must differ
// from. Processes the tests start (fuzz workers, helper processes) inherit
// it, run in the same private namespace and are not moved again. (Not
// HOSTFLOW_*: the daemon's configuration rejects unknown variables there.)
const PrivateNetnsEnv = "HF_TEST_PARENT_NETNS"

// RunInPrivateNetns runs the package's tests in a network namespace of
// their own, so that their sockets on 127.0.0.1, [::1] and localhost never
// meet the host's. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testutil.RunInPrivateNetns(m) }
//
// The first time, it starts the test binary again (same arguments, same
// environment plus PrivateNetnsEnv) in a new network namespace, forwards
// stdin, stdout, stderr and the signals go test sends (SIGINT, SIGTERM,
// SIGQUIT on timeout), and exits with the child's status. Root gets a plain
// new network namespace (CLONE_NEWNET); anyone else, or root without
// CAP_SYS_ADMIN, a new user namespace that maps only their own uid and gid
// and keeps CAP_NET_ADMIN inside it (unprivileged user namespaces must be
// allowed). In the child, it brings lo up and calls m.Run.
//
// The namespace holds only lo. Tests that make their own namespaces
// (NewNetns, `ip netns add`) still can: named namespaces live in the
// host's mount namespace, which the child shares.
//
// When no namespace can be made, the tests do not run: the process exits
// with status 1 and a message that says how to run them (as root, or with
// unprivileged user namespaces enabled). It never falls back to the host's
// namespace, with or without CI=true.
func RunInPrivateNetns(m *testing.M) {
	os.Exit(runInPrivateNetns(m))
}

func runInPrivateNetns(m *testing.M) int {
	if parent, ok := os.LookupEnv(PrivateNetnsEnv); ok {
		if err := checkPrivateNetns(parent); err != nil {
			fmt.Fprintf(os.Stderr, "testutil: private network namespace: %v\n", err)
			return 1
		}
		return m.Run()
	}
	code, err := runChildInNetns()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testutil: cannot run the tests in a private network namespace:\n%v\n"+
			"They open sockets on 127.0.0.1 and must not do so in the host's namespace. Run them as root,\n"+
			"or as a user with unprivileged user namespaces enabled (sysctl user.max_user_namespaces > 0,\n"+
			"kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0 where those exist).\n", err)
		return 1
	}
	return code
}

// netnsInode returns the inode number of the network namespace of the
// process (or thread) whose /proc directory is dir.
func netnsInode(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir+"/ns/net", &st); err != nil {
		return 0, fmt.Errorf("network namespace: %w", err)
	}
	return st.Ino, nil
}

// netnsWay is one way to start a process in a new network namespace.
type netnsWay struct {
	name string
	attr *syscall.SysProcAttr
}

// netnsWays returns the ways to start a process in a new network
// namespace, the most direct first.
func netnsWays() []netnsWay {
	uid, gid := os.Getuid(), os.Getgid()
	return []netnsWay{
		{"new network namespace (needs CAP_SYS_ADMIN)", &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWNET,
			Pdeathsig:  syscall.SIGKILL,
		}},
		{"new user and network namespace", &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
			// Without a root uid inside, execve drops every capability but
			// the ambient ones; CAP_NET_ADMIN is what bringing lo up needs.
			AmbientCaps: []uintptr{unix.CAP_NET_ADMIN},
			Pdeathsig:   syscall.SIGKILL,
		}},
	}
}

// runChildInNetns runs this test binary again in a new network namespace
// and returns its exit status.
func runChildInNetns() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find test binary: %w", err)
	}
	ino, err := netnsInode("/proc/self")
	if err != nil {
		return 0, err
	}
	// Pdeathsig fires when the thread that started the child exits: keep
	// this goroutine on its thread until the process ends.
	runtime.LockOSThread()
	// Catch the signals before the child starts: one that comes while it
	// starts (go test's SIGQUIT on timeout, a ^C) waits in the channel and
	// is forwarded, instead of killing this process and leaving the child
	// to Pdeathsig without its goroutine dump.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var errs []error
	var cmd *exec.Cmd
	for _, way := range netnsWays() {
		c := exec.Command(exe, os.Args[1:]...)
		c.Args[0] = os.Args[0]
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
		c.Env = append(os.Environ(), PrivateNetnsEnv+"="+strconv.FormatUint(ino, 10))
		c.SysProcAttr = way.attr
		if err := c.Start(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", way.name, err))
			continue
		}
		cmd = c
		break
	}
	if cmd == nil {
		return 0, errors.Join(errs...)
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return 0, fmt.Errorf("wait for test process: %w", err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		fmt.Fprintf(os.Stderr, "testutil: test process killed by %v\n", ws.Signal())
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// checkPrivateNetns makes sure the process runs in another network
// namespace than parent (an inode number from PrivateNetnsEnv) and that lo
// is up there.
func checkPrivateNetns(parent string) error {
	want, err := strconv.ParseUint(parent, 10, 64)
	if err != nil {
		return fmt.Errorf("%s=%q: %w", PrivateNetnsEnv, parent, err)
	}
	ino, err := netnsInode("/proc/self")
	if err != nil {
		return err
	}
	if ino == want {
		return fmt.Errorf("still in the parent's namespace (inode %d)", ino)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Flags&net.FlagUp != 0 {
		return nil // a process the tests started, in the namespace already set up
	}
	link, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}
