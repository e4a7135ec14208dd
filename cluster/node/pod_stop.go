package main

// Stopping a pod as a deletion does: preStop hooks, SIGTERM, SIGKILL at the grace
// period's end, sidecars after the main containers; then the final status and the
// network torn down.

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func (r *podRT) podGrace() time.Duration {
	if g := r.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// stopProc: preStop hook, SIGTERM, and SIGKILL at the deadline.
func (r *podRT) stopProc(c *containerRT, pr *proc, deadline time.Time, preStop bool) {
	select {
	case <-pr.done:
		return
	default:
	}
	if h := c.spec.Lifecycle; preStop && h != nil && h.PreStop != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if err := r.runHook(ctx, c, h.PreStop); err != nil {
			r.logf("container %s: preStop hook: %v", c.spec.Name, err)
		}
		cancel()
	}
	_ = syscall.Kill(pr.pid, syscall.SIGTERM)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-pr.done:
		return
	case <-t.C:
	}
	_ = syscall.Kill(pr.pid, syscall.SIGKILL) // pid 1 of its PID namespace: all of it goes
	select {
	case <-pr.done:
	case <-time.After(5 * time.Second):
	}
}

func (r *podRT) runHook(ctx context.Context, c *containerRT, h *corev1.LifecycleHandler) error {
	switch {
	case h.Sleep != nil:
		sleepCtx(ctx, time.Duration(h.Sleep.Seconds)*time.Second)
		return nil
	case h.Exec != nil:
		code, err := r.execInContainer(ctx, c, h.Exec.Command, nil, nil, nil)
		if err == nil && code != 0 {
			err = fmt.Errorf("exited with %d", code)
		}
		return err
	case h.HTTPGet != nil:
		p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: h.HTTPGet}}
		ok, msg := r.runProbeOnce(ctx, p, c, time.Until(deadlineOr(ctx, 30*time.Second)))
		if !ok {
			return fmt.Errorf("%s", msg)
		}
		return nil
	case h.TCPSocket != nil:
		return nil // deprecated and a no-op in the kubelet too
	}
	return nil
}

func deadlineOr(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}

// terminate stops the pod as a deletion does. final: report the terminal status
// (deletion); a node shutdown does not, so the pod restarts with the node.
func (r *podRT) terminate(grace time.Duration, final bool) {
	r.mu.Lock()
	if r.terminating {
		r.mu.Unlock()
		<-r.stopped
		return
	}
	r.terminating = true
	r.mu.Unlock()
	r.cancel()
	deadline := time.Now().Add(grace)
	stopAll := func(list []*containerRT, dl time.Time) {
		var wg sync.WaitGroup
		for _, c := range list {
			if pr := r.currentProc(c); pr != nil {
				wg.Add(1)
				go func() { defer wg.Done(); r.stopProc(c, pr, dl, true) }()
			}
		}
		wg.Wait()
	}
	stopAll(r.ctrs, deadline)
	// Sidecars (and an init container still running) go after the main containers.
	stopAll(r.inits, maxTime(deadline, time.Now().Add(2*time.Second)))
	waitTimeout(&r.loops, 10*time.Second)
	for _, c := range append(append([]*containerRT{}, r.inits...), r.ctrs...) {
		if pr := r.currentProc(c); pr != nil {
			_ = syscall.Kill(pr.pid, syscall.SIGKILL)
			select {
			case <-pr.done:
			case <-time.After(5 * time.Second):
			}
		}
	}
	r.mu.Lock()
	pn := r.net
	allOK := true
	for _, c := range append(append([]*containerRT{}, r.inits...), r.ctrs...) {
		if c.terminated == nil {
			t := c.lastTerm
			if c.proc != nil {
				t = &corev1.ContainerStateTerminated{ExitCode: c.proc.exitCode, Reason: "Error",
					StartedAt: metaTime(c.proc.started), FinishedAt: metaTime(c.proc.finished)}
				if c.proc.exitCode == 0 {
					t.Reason = "Completed"
				}
			}
			if t == nil {
				t = &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown", Message: "The container could not be located when the pod was terminated"}
			}
			c.terminated = t
		}
		c.waiting, c.ready = nil, false
		if !c.init && c.terminated.ExitCode != 0 {
			allOK = false
		}
	}
	if allOK {
		r.finalPhase = corev1.PodSucceeded
	} else {
		r.finalPhase = corev1.PodFailed
	}
	r.mu.Unlock()
	if pn.NetNS != "" {
		r.p.cfg.Net.Teardown(pn)
		r.p.cfg.Net.Alloc.Release(net.ParseIP(pn.IP))
		_ = r.p.state.update(func(s *NodeState) { delete(s.Pods, string(r.pod.UID)) })
	}
	if final {
		r.notify()
		_ = os.RemoveAll(r.dir)
	}
	r.logf("stopped")
	close(r.stopped)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
