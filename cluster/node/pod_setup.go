package main

// A pod's setup before its containers: its network namespace and IP, its /etc files
// (resolv.conf, hosts) and its volumes, kept up to date while it runs.

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// setup makes the pod's network, /etc files and volumes; it can be retried.
func (r *podRT) setup() error {
	if err := os.MkdirAll(filepath.Join(r.dir, "etc"), 0o755); err != nil {
		return err
	}
	if r.podIP == "" {
		if r.pod.Spec.HostNetwork {
			r.mu.Lock()
			r.podIP = r.p.cfg.NodeIP
			r.mu.Unlock()
		} else {
			ip, err := r.p.cfg.Net.Alloc.Allocate()
			if err != nil {
				return err
			}
			// Recorded before it exists, so a crash in between is still cleaned up.
			pn := PodNet{Namespace: r.pod.Namespace, Name: r.pod.Name, NetNS: netnsName(string(r.pod.UID)),
				HostVeth: hostVethName(string(r.pod.UID)), IP: ip.String()}
			_ = r.p.state.update(func(s *NodeState) { s.Pods[string(r.pod.UID)] = pn })
			pn2, err := r.p.cfg.Net.Setup(string(r.pod.UID), ip)
			if err != nil {
				r.p.cfg.Net.Alloc.Release(ip)
				_ = r.p.state.update(func(s *NodeState) { delete(s.Pods, string(r.pod.UID)) })
				return fmt.Errorf("pod network: %w", err)
			}
			pn2.Namespace, pn2.Name = pn.Namespace, pn.Name
			if sc := r.pod.Spec.SecurityContext; sc != nil && len(sc.Sysctls) > 0 {
				if err := r.p.cfg.Net.ApplySysctls(pn2.NetNS, sc.Sysctls); err != nil {
					r.p.cfg.Net.Teardown(pn2)
					r.p.cfg.Net.Alloc.Release(ip)
					_ = r.p.state.update(func(s *NodeState) { delete(s.Pods, string(r.pod.UID)) })
					return fmt.Errorf("pod network: %w", err)
				}
			}
			r.mu.Lock()
			r.net, r.podIP = pn2, ip.String()
			r.mu.Unlock()
			r.logf("network %s ip %s", pn2.NetNS, r.podIP)
		}
		r.notify()
	}
	hostname := r.pod.Name
	if r.pod.Spec.Hostname != "" {
		hostname = r.pod.Spec.Hostname
	}
	files := map[string]string{
		"resolv.conf": resolvConf(r.pod.Namespace, r.p.cfg.ClusterDomain, r.p.cfg.DNSServer),
		"hosts":       hostsFile(r.pod.Name, hostname, r.pod.Spec.Subdomain, r.pod.Namespace, r.p.cfg.ClusterDomain, r.podIP),
	}
	if r.pod.Spec.HostNetwork && r.pod.Spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
			files["resolv.conf"] = string(b)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(r.dir, "etc", name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	refresh, err := r.prepareVolumes(r.ctx)
	if err != nil {
		return err
	}
	if !refresh.IsZero() {
		go r.refreshVolumes(refresh)
	}
	return nil
}

// refreshVolumes renews service account tokens before they expire and brings ConfigMap
// and Secret volumes up to date (only changed files are rewritten).
func (r *podRT) refreshVolumes(at time.Time) {
	for {
		if !sleepCtx(r.ctx, time.Until(at)) {
			return
		}
		next, err := r.prepareVolumes(r.ctx)
		if err != nil {
			r.logf("volume refresh: %v", err)
			next = time.Now().Add(30 * time.Second)
		}
		if next.IsZero() {
			return
		}
		at = next
	}
}
