package main

// The restart loop of each container: a run to its end, then the pod's restart policy
// and the kubelet's back-off (CrashLoopBackOff, ImagePullBackOff); init containers run
// to success in order.

import (
	"context"
	"fmt"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// runOnce starts the container and waits for the run to end (probes run meanwhile for
// regular containers and sidecars). It returns nil when the container could not start.
func (r *podRT) runOnce(c *containerRT) (*corev1.ContainerStateTerminated, error) {
	pr, err := r.startContainer(c)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	c.runs++
	c.restarts = int32(c.runs - 1)
	c.proc, c.waiting, c.terminated, c.killMsg = pr, nil, nil, ""
	c.ready = false
	c.started = c.spec.StartupProbe == nil && (!c.init || c.sidecar)
	if c.init && !c.sidecar {
		c.started = true
	}
	r.mu.Unlock()
	r.notify()
	if r.ctx.Err() != nil { // terminated while starting: it must not survive
		_ = syscall.Kill(pr.pid, syscall.SIGKILL)
	}
	pctx, cancel := context.WithCancel(r.ctx)
	if !c.init || c.sidecar {
		go r.runProbes(pctx, c, pr)
	}
	<-pr.done
	cancel()
	reason := "Error"
	if pr.exitCode == 0 {
		reason = "Completed"
	}
	r.mu.Lock()
	term := &corev1.ContainerStateTerminated{ExitCode: pr.exitCode, Reason: reason, Message: c.killMsg,
		StartedAt: metaTime(pr.started), FinishedAt: metaTime(pr.finished), ContainerID: fmt.Sprintf("sms://%s/%s/%d", r.pod.UID, c.spec.Name, c.runs)}
	c.ready = false
	r.mu.Unlock()
	return term, nil
}

// waitBackoff shows the container waiting with reason and message while backing off.
func (r *podRT) waitBackoff(c *containerRT, d time.Duration, reason, msg string) bool {
	r.mu.Lock()
	c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
	r.mu.Unlock()
	r.notify()
	return sleepCtx(r.ctx, d)
}

// handleStartError backs off after a run that could not start (image missing, mount
// or exec failure), as the kubelet does for image pulls and create errors.
func (r *podRT) handleStartError(c *containerRT, bo *Backoff, err error) bool {
	d := max(bo.Next(0), 10*time.Second)
	r.logf("container %s: %v", c.spec.Name, err)
	reason, backReason := "CreateContainerError", "CreateContainerError"
	if _, ok := err.(imageError); ok {
		reason, backReason = "ErrImagePull", "ImagePullBackOff"
	}
	r.mu.Lock()
	c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
	r.mu.Unlock()
	r.notify()
	if !sleepCtx(r.ctx, 2*time.Second) {
		return false
	}
	return r.waitBackoff(c, d, backReason, fmt.Sprintf("Back-off %s: %v", d, err))
}

// runInit runs a regular init container to success; false: the pod does not go on.
func (r *podRT) runInit(c *containerRT) bool {
	bo := newBackoff()
	for r.ctx.Err() == nil {
		term, err := r.runOnce(c)
		if err != nil {
			if !r.handleStartError(c, bo, err) {
				return false
			}
			continue
		}
		if r.ctx.Err() != nil {
			r.setTerminated(c, term)
			return false
		}
		if term.ExitCode == 0 {
			r.setTerminated(c, term)
			r.notify()
			return true
		}
		if r.pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			r.mu.Lock()
			c.terminated, r.initFailed = term, true
			r.mu.Unlock()
			r.notify()
			return false
		}
		r.mu.Lock()
		c.lastTerm = term
		r.mu.Unlock()
		d := bo.Next(term.FinishedAt.Sub(term.StartedAt.Time))
		if !r.waitBackoff(c, d, "CrashLoopBackOff", r.backoffMsg(c, d)) {
			return false
		}
	}
	return false
}

func (r *podRT) setTerminated(c *containerRT, term *corev1.ContainerStateTerminated) {
	r.mu.Lock()
	c.terminated, c.waiting = term, nil
	r.mu.Unlock()
}

func (r *podRT) backoffMsg(c *containerRT, d time.Duration) string {
	return fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", d, c.spec.Name, r.pod.Name, r.pod.Namespace, r.pod.UID)
}

// containerLoop runs a container (or sidecar) with the pod's restart policy.
func (r *podRT) containerLoop(c *containerRT) {
	defer r.loops.Done()
	bo := newBackoff()
	for r.ctx.Err() == nil {
		term, err := r.runOnce(c)
		if err != nil {
			if !r.handleStartError(c, bo, err) {
				return
			}
			continue
		}
		if r.ctx.Err() != nil {
			r.setTerminated(c, term)
			r.notify()
			return
		}
		policy := r.pod.Spec.RestartPolicy
		restart := c.sidecar || policy == corev1.RestartPolicyAlways || policy == "" ||
			(policy == corev1.RestartPolicyOnFailure && term.ExitCode != 0)
		if !restart {
			r.setTerminated(c, term)
			r.notify()
			return
		}
		r.mu.Lock()
		c.lastTerm = term
		r.mu.Unlock()
		d := bo.Next(term.FinishedAt.Sub(term.StartedAt.Time))
		if d == 0 {
			r.mu.Lock()
			c.waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
			r.mu.Unlock()
			continue
		}
		if !r.waitBackoff(c, d, "CrashLoopBackOff", r.backoffMsg(c, d)) {
			return
		}
	}
}
