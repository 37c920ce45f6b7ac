package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { RunInPrivateNetns(m) }

// TestPrivateNetns checks what TestMain promises the package's tests: a
// network namespace that is neither the one go test started them in nor
// PID 1's, holding only lo, which is up.
func TestPrivateNetns(t *testing.T) {
	self, err := netnsInode("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	parent, ok := os.LookupEnv(PrivateNetnsEnv)
	if !ok {
		t.Fatalf("%s not set: the tests run in the namespace they were started in", PrivateNetnsEnv)
	}
	if parent == strconv.FormatUint(self, 10) {
		t.Errorf("netns inode %d is the parent's", self)
	}
	// PID 1's namespace is the host's, where there is one to read: that
	// needs ptrace rights on PID 1, which a user namespace or a sandboxed
	// root may lack.
	if host, err := netnsInode("/proc/1"); err == nil && host == self {
		t.Errorf("netns inode %d is PID 1's", self)
	} else if err != nil {
		t.Logf("PID 1's namespace not compared: %v", err)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ifc := range ifs {
		names = append(names, ifc.Name)
	}
	if !slices.Equal(names, []string{"lo"}) {
		t.Fatalf("interfaces %v, want only lo", names)
	}
	if ifs[0].Flags&net.FlagUp == 0 {
		t.Errorf("lo is down: %v", ifs[0].Flags)
	}
	// 127.0.0.1 answers, in this namespace only.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial own listener on lo: %v", err)
	}
	c.Close()
}

// helperEnv makes TestPrivateNetnsHelper do something instead of skipping.
const helperEnv = "HF_TESTUTIL_HELPER"

// TestPrivateNetnsHelper is the test the child binaries of
// TestRunInPrivateNetnsChild run: it prints its namespace and fails when
// asked to.
func TestPrivateNetnsHelper(t *testing.T) {
	what := os.Getenv(helperEnv)
	if what == "" {
		t.Skip("helper for TestRunInPrivateNetnsChild")
	}
	ino, err := netnsInode("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helper netns %d parent %s", ino, os.Getenv(PrivateNetnsEnv))
	switch what {
	case "fail":
		t.Fatal("helper fails as asked")
	case "hang":
		fmt.Println("helper ready")
		time.Sleep(30 * time.Second)
		t.Fatal("helper not interrupted")
	}
}

// environWithoutMarker is the environment go test gives a test binary:
// this one's without PrivateNetnsEnv.
func environWithoutMarker() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, PrivateNetnsEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestRunInPrivateNetnsChild runs this test binary again without the
// marker, as go test would, and checks that it re-executes itself into yet
// another namespace and hands back the child's output and exit status.
func TestRunInPrivateNetnsChild(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, err := netnsInode("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	env := environWithoutMarker()
	for _, tc := range []struct {
		what     string
		wantCode int
		wantOut  string
	}{
		{"pass", 0, "--- PASS: TestPrivateNetnsHelper"},
		{"fail", 1, "--- FAIL: TestPrivateNetnsHelper"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^TestPrivateNetnsHelper$", "-test.v", "-test.count=1")
			cmd.Env = append(slices.Clone(env), helperEnv+"="+tc.what)
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || !strings.Contains(string(out), tc.wantOut) {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.wantCode, out)
			}
			// The child's parent namespace is this test's, and the child
			// runs in another one.
			want := "parent " + strconv.FormatUint(self, 10)
			if !strings.Contains(string(out), want) || strings.Contains(string(out), "helper netns "+strconv.FormatUint(self, 10)+" ") {
				t.Errorf("output does not show a new namespace under %d:\n%s", self, out)
			}
		})
	}
}

// TestRunInPrivateNetnsRefuses runs this test binary without the marker
// where it can make no namespace: in a user namespace that allows no
// further user namespaces, without CAP_SYS_ADMIN. It must not run the tests
// (in the namespace it was started in) but exit 1 saying why.
func TestRunInPrivateNetnsRefuses(t *testing.T) {
	RequireTool(t, "unshare")
	RequireTool(t, "setpriv")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := environWithoutMarker()
	script := `echo 0 > /proc/sys/user/max_user_namespaces || exit 99
exec setpriv --inh-caps=-all --bounding-set=-sys_admin -- "$0" -test.run='^TestPrivateNetnsHelper$' -test.v`
	cmd := exec.Command("unshare", "--user", "--map-root-user", "sh", "-c", script, exe)
	cmd.Env = append(env, helperEnv+"=pass")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err %v, want exit status 1; output:\n%s", err, out)
	}
	if ee.ExitCode() == 99 {
		SkipOrFail(t, "cannot set up a user namespace without namespaces: %s", out)
	}
	for _, want := range []string{"cannot run the tests in a private network namespace", "new network namespace", "new user and network namespace", "Run them as root"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if ee.ExitCode() != 1 || strings.Contains(string(out), "helper netns") {
		t.Errorf("exit %d, want 1 without running the tests; output:\n%s", ee.ExitCode(), out)
	}
}

// TestRunInPrivateNetnsForwardsSignals sends SIGQUIT, what go test sends a
// test binary that overran its timeout, to a test binary that runs its
// tests in a child: the child's goroutines must be dumped (they show the
// hanging test), and the binary must end.
func TestRunInPrivateNetnsForwardsSignals(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(exe, "-test.run=^TestPrivateNetnsHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(environWithoutMarker(), helperEnv+"=hang")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	stop := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	defer stop.Stop()
	var out strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if sc.Text() == "helper ready" {
			if err := cmd.Process.Signal(syscall.SIGQUIT); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	rest, _ := io.ReadAll(r)
	out.Write(rest)
	err = cmd.Wait()
	if !strings.Contains(out.String(), "helper ready") {
		t.Fatalf("helper never ready; output:\n%s", out.String())
	}
	if err == nil || strings.Contains(out.String(), "helper not interrupted") {
		t.Errorf("exit %v after SIGQUIT, want a failure before the helper's end", err)
	}
	// The dump comes from the child, whose main goroutine is in the test,
	// not from the parent waiting for it.
	if !strings.Contains(out.String(), "SIGQUIT") || !strings.Contains(out.String(), "testutil.TestPrivateNetnsHelper(") {
		t.Errorf("no goroutine dump of the hanging test; output:\n%s", out.String())
	}
}
