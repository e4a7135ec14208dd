package main

// Into a running pod: a command in a container's namespaces (kubectl exec, exec probes
// and hooks) and port-forwarding to the pod's IP.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"time"
)

// currentProc is the container's running process, if any.
func (r *podRT) currentProc(c *containerRT) *proc {
	r.mu.Lock()
	pr := c.proc
	r.mu.Unlock()
	if pr == nil {
		return nil
	}
	select {
	case <-pr.done:
		return nil
	default:
		return pr
	}
}

// execInContainer runs a command in the container's namespaces (mount, network, PID,
// UTS) with its user, environment and working directory, like nsenter(1) — which it uses.
func (r *podRT) execInContainer(ctx context.Context, c *containerRT, command []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	pr := r.currentProc(c)
	if pr == nil {
		return -1, fmt.Errorf("container %s is not running", c.spec.Name)
	}
	if len(command) == 0 {
		return -1, fmt.Errorf("no command")
	}
	wd := pr.workDir
	if wd == "" {
		wd = "/"
	}
	// --root: the target's root, which differs from its namespace's when it pivoted.
	args := []string{"--target", strconv.Itoa(pr.pid), "--mount", "--net", "--pid", "--uts", "--root", "--wd=" + wd}
	if pr.uid != nil {
		args = append(args, "--setuid", strconv.Itoa(*pr.uid), "--setgid", strconv.Itoa(*pr.gid))
	}
	args = append(append(args, "--"), command...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = pr.env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.WaitDelay = time.Second
	if err := startProcess(cmd); err != nil {
		return -1, err
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		return -1, fmt.Errorf("timed out: %w", ctx.Err())
	}
	if cmd.ProcessState == nil {
		return -1, err
	}
	return int(exitCodeOf(cmd, err)), nil
}

// portForward copies a stream to and from podIP:port, dialled from the node.
func (r *podRT) portForward(ctx context.Context, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	r.mu.Lock()
	ip := r.podIP
	r.mu.Unlock()
	if ip == "" {
		return fmt.Errorf("pod has no IP yet")
	}
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	defer conn.Close()
	// The client closing its side half-closes the connection; the pod's answer is
	// still copied until the pod closes.
	go func() { _, _ = io.Copy(conn, stream); closeWrite(conn) }()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(stream, conn); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
