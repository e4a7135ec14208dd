package main

// Probes as the kubelet runs them: from the node against the pod IP (httpGet,
// tcpSocket, grpc) or inside the container (exec), with Kubernetes' thresholds.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type probeParams struct {
	initialDelay, period, timeout time.Duration
	success, failure              int
}

func probeParamsOf(p *corev1.Probe) probeParams {
	pp := probeParams{period: 10 * time.Second, timeout: time.Second, success: 1, failure: 3}
	pp.initialDelay = time.Duration(p.InitialDelaySeconds) * time.Second
	if p.PeriodSeconds > 0 {
		pp.period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		pp.timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	if p.SuccessThreshold > 0 {
		pp.success = int(p.SuccessThreshold)
	}
	if p.FailureThreshold > 0 {
		pp.failure = int(p.FailureThreshold)
	}
	return pp
}

// probeCounter turns single results into the probe's state: it flips to success after
// successThreshold consecutive successes and to failure after failureThreshold
// consecutive failures.
type probeCounter struct {
	params           probeParams
	result           bool
	succRun, failRun int
}

func (c *probeCounter) observe(ok bool) (result, changed bool) {
	if ok {
		c.succRun++
		c.failRun = 0
		if !c.result && c.succRun >= c.params.success {
			c.result = true
			return true, true
		}
	} else {
		c.failRun++
		c.succRun = 0
		if c.result && c.failRun >= c.params.failure {
			c.result = false
			return false, true
		}
		// A probe that starts out failed (readiness, startup) reports each failure run
		// reaching the threshold, so startup can give up.
		if !c.result && c.failRun == c.params.failure {
			return false, true
		}
	}
	return c.result, false
}

func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port %q not found in the container's ports", port.StrVal)
}

// runProbeOnce performs one check; the message says why it failed.
func (r *podRT) runProbeOnce(ctx context.Context, p *corev1.Probe, c *containerRT, timeout time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ip := r.podIP
	switch {
	case p.HTTPGet != nil:
		port, err := resolvePort(p.HTTPGet.Port, &c.spec)
		if err != nil {
			return false, err.Error()
		}
		host := ip
		if p.HTTPGet.Host != "" {
			host = p.HTTPGet.Host
		}
		scheme := strings.ToLower(string(p.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := p.HTTPGet.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/1.36")
		for _, h := range p.HTTPGet.HTTPHeaders {
			if strings.EqualFold(h.Name, "host") {
				req.Host = h.Value
			} else {
				req.Header.Set(h.Name, h.Value)
			}
		}
		tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // kubelet probes do not verify
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 400 {
			return true, ""
		}
		return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, &c.spec)
		if err != nil {
			return false, err.Error()
		}
		host := ip
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	case p.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(ip, strconv.Itoa(int(p.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		svc := ""
		if p.GRPC.Service != nil {
			svc = *p.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return false, err.Error()
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return false, fmt.Sprintf("service unhealthy (responded with %q)", resp.Status)
		}
		return true, ""
	case p.Exec != nil:
		code, err := r.execInContainer(ctx, c, p.Exec.Command, nil, nil, nil)
		if err != nil {
			return false, err.Error()
		}
		if code != 0 {
			return false, fmt.Sprintf("command exited with %d", code)
		}
		return true, ""
	}
	return false, "probe has no handler"
}

// probeLoop runs one probe for one run of a container until ctx ends. onChange is
// called with each change of the probe's state.
func (r *podRT) probeLoop(ctx context.Context, p *corev1.Probe, c *containerRT, initial bool, onChange func(ok bool, msg string) (stop bool)) {
	pp := probeParamsOf(p)
	cnt := &probeCounter{params: pp, result: initial}
	if !sleepCtx(ctx, pp.initialDelay) {
		return
	}
	for {
		ok, msg := r.runProbeOnce(ctx, p, c, pp.timeout)
		if ctx.Err() != nil {
			return
		}
		if res, changed := cnt.observe(ok); changed {
			if onChange(res, msg) {
				return
			}
		}
		if !sleepCtx(ctx, pp.period) {
			return
		}
	}
}

// runProbes: startup first; once it succeeds, liveness and readiness.
func (r *podRT) runProbes(ctx context.Context, c *containerRT, pr *proc) {
	if sp := c.spec.StartupProbe; sp != nil {
		ok := false
		r.probeLoop(ctx, sp, c, false, func(res bool, msg string) bool {
			if res {
				ok = true
				return true
			}
			r.killForProbe(c, pr, sp, "Startup probe failed: "+msg)
			return true
		})
		if !ok {
			return
		}
		r.mu.Lock()
		c.started = true
		if c.spec.ReadinessProbe == nil {
			c.ready = true
		}
		r.mu.Unlock()
		r.notify()
	} else if c.spec.ReadinessProbe == nil {
		r.mu.Lock()
		c.ready = true
		r.mu.Unlock()
		r.notify()
	}
	if lp := c.spec.LivenessProbe; lp != nil {
		go r.probeLoop(ctx, lp, c, true, func(res bool, msg string) bool {
			if !res {
				r.logf("container %s: liveness probe failed: %s", c.spec.Name, msg)
				r.killForProbe(c, pr, lp, "Liveness probe failed: "+msg)
				return true
			}
			return false
		})
	}
	if rp := c.spec.ReadinessProbe; rp != nil {
		go r.probeLoop(ctx, rp, c, false, func(res bool, msg string) bool {
			r.mu.Lock()
			if c.proc == pr {
				c.ready = res
			}
			r.mu.Unlock()
			r.notify()
			return false
		})
	}
}

func (r *podRT) killForProbe(c *containerRT, pr *proc, p *corev1.Probe, msg string) {
	r.mu.Lock()
	c.killMsg = msg
	r.mu.Unlock()
	grace := r.podGrace()
	if p.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	go r.stopProc(c, pr, time.Now().Add(grace), true)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
