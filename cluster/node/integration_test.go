package main

// Linux integration test: a real pod network namespace on a test bridge, a process
// started through container-init (mount, PID and UTS namespaces, overlay and bind
// mounts, setns) and the parent-death signal. CI runs as root: not being root is a
// failure here, not a skip.

import (
	"bufio"
	"encoding/json"
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

// TestMain lets the test binary act as container-init and as helper programs.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "container-init" {
		containerInit(os.Args[2])
		return
	}
	switch os.Getenv("SMS_NODE_TEST_HELPER") {
	case "listen":
		helperListen()
		return
	case "spawn":
		helperSpawn()
		return
	}
	os.Exit(m.Run())
}

// helperListen runs inside the pod: it answers each connection with what it sees.
func helperListen() {
	l, err := net.Listen("tcp", os.Getenv("SMS_LISTEN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(3)
		}
		resolv, _ := os.ReadFile("/etc/resolv.conf")
		vol, _ := os.ReadFile(os.Getenv("SMS_VOL_FILE"))
		host, _ := os.Hostname()
		fmt.Fprintf(c, "pid=%d host=%s vol=%s resolv=%s\n", os.Getpid(), host, strings.TrimSpace(string(vol)),
			strings.ReplaceAll(strings.TrimSpace(string(resolv)), "\n", ";"))
		c.Close()
	}
}

// helperSpawn starts a child through the spawner, prints its PID and waits to be killed.
func helperSpawn() {
	cmd := exec.Command("sleep", "60")
	if err := startProcess(cmd); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println(cmd.Process.Pid)
	select {}
}

func requireRootAndIP(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the integration test needs root (network namespaces, veths, mounts): run `go test ./...` as root, as CI does")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the integration test needs iproute2's `ip` command: apt-get install iproute2")
	}
}

func procAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] != 'Z'
}

func TestPodNetworkAndContainerInit(t *testing.T) {
	requireRootAndIP(t)
	pid := os.Getpid()
	bridge := fmt.Sprintf("smsbrtest%d", pid%1000000)
	_, podCIDR, _ := net.ParseCIDR("198.18.201.0/24")
	_, clusterCIDR, _ := net.ParseCIDR("198.18.0.0/15")
	alloc, _ := NewIPAllocator(podCIDR)
	nw := &Network{Bridge: bridge, PodCIDR: podCIDR, ClusterCIDR: clusterCIDR, Alloc: alloc}
	if linkExists(bridge) {
		t.Fatalf("bridge %s already exists", bridge)
	}
	created, err := nw.EnsureBridge()
	if err != nil || !created {
		t.Fatalf("bridge: %v (created %v)", err, created)
	}
	uid := fmt.Sprintf("%08x-7e57-4000-8000-%012x", pid, time.Now().UnixNano()&0xffffffffffff)
	ip, _ := alloc.Allocate()
	pn, err := nw.Setup(uid, ip)
	cleaned := false
	cleanup := func() {
		if !cleaned {
			cleaned = true
			nw.Teardown(pn)
			_ = nw.DeleteBridge()
		}
	}
	defer cleanup()
	if err != nil {
		t.Fatal(err)
	}

	routes, _ := exec.Command("ip", "-n", pn.NetNS, "route", "show").CombinedOutput()
	if strings.Contains(string(routes), "default") {
		t.Errorf("pod has a default route:\n%s", routes)
	}
	if !strings.Contains(string(routes), "198.18.0.0/15 via 198.18.201.1") {
		t.Errorf("pod lacks the cluster route:\n%s", routes)
	}

	// A container: the test binary as its program, with resolv.conf and a volume at a
	// path that does not exist on the host (so /var gets an overlay).
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	_ = os.WriteFile(resolv, []byte(resolvConf("sms", "cluster.local", "198.19.0.10")), 0o644)
	vol := filepath.Join(dir, "vol")
	_ = os.MkdirAll(vol, 0o755)
	_ = os.WriteFile(filepath.Join(vol, "data"), []byte("volume-ok"), 0o644)
	volDst := fmt.Sprintf("/var/lib/sms-node-test-%d", pid)
	mounts, overlays, newTops, err := planMounts([]MountSpec{{Src: resolv, Dst: "/etc/resolv.conf", ReadOnly: true}, {Src: vol, Dst: volDst, ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	spec := InitSpec{NetNS: "/run/netns/" + pn.NetNS, Hostname: "test-pod", Scratch: filepath.Join(dir, "scratch"),
		Overlays: overlays, NewTops: newTops, Mounts: mounts, Argv: []string{self, "-test.run=^$"}}
	_ = os.MkdirAll(spec.Scratch, 0o755)
	b, _ := json.Marshal(spec)
	specPath := filepath.Join(dir, "spec.json")
	_ = os.WriteFile(specPath, b, 0o600)

	errR, errW, _ := os.Pipe()
	cmd := exec.Command(self, "container-init", specPath)
	cmd.Env = []string{"SMS_NODE_TEST_HELPER=listen", "SMS_LISTEN=:18080", "SMS_VOL_FILE=" + volDst + "/data", "PATH=/usr/bin:/bin"}
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{errW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS}
	if err := startProcess(cmd); err != nil {
		t.Fatal(err)
	}
	errW.Close()
	msg, _ := io.ReadAll(errR)
	if len(msg) > 0 {
		_ = cmd.Wait()
		t.Fatalf("container-init: %s", msg)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	var reply string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), "18080"), time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			reply, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if reply == "" {
		t.Fatalf("no TCP answer from the pod at %s:18080", ip)
	}
	for _, want := range []string{"pid=1 ", "host=test-pod ", "vol=volume-ok ", "nameserver 198.19.0.10", "search sms.svc.cluster.local"} {
		if !strings.Contains(reply, want) {
			t.Errorf("pod answered %q: missing %q", reply, want)
		}
	}
	if _, err := os.Stat(volDst); err == nil {
		t.Errorf("%s was created on the host", volDst)
	}
	if b, _ := os.ReadFile("/etc/resolv.conf"); strings.Contains(string(b), "198.19.0.10") && !strings.Contains(string(resolvConf("sms", "cluster.local", "198.19.0.10")), string(b)) {
		t.Error("host /etc/resolv.conf changed")
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	cleanup()
	for _, ns := range listNetns() {
		if ns == pn.NetNS {
			t.Errorf("netns %s left behind", ns)
		}
	}
	for _, l := range listLinks() {
		if l == pn.HostVeth || l == bridge {
			t.Errorf("link %s left behind", l)
		}
	}
}

func TestParentDeathKillsChildren(t *testing.T) {
	requireRootAndIP(t)
	self, _ := os.Executable()
	helper := exec.Command(self, "-test.run=^$")
	helper.Env = append(os.Environ(), "SMS_NODE_TEST_HELPER=spawn")
	out, _ := helper.StdoutPipe()
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = helper.Process.Kill()
		t.Fatalf("helper: %v", err)
	}
	var child int
	if _, err := fmt.Sscan(line, &child); err != nil {
		_ = helper.Process.Kill()
		t.Fatalf("helper said %q", line)
	}
	if !procAlive(child) {
		t.Fatal("child not running")
	}
	_ = helper.Process.Signal(syscall.SIGKILL) // as kill -9 of the node
	_ = helper.Wait()
	for i := 0; i < 50 && procAlive(child); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if procAlive(child) {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Fatal("the child outlived its parent: no parent-death signal")
	}
}
