package main

// Container environment. virtual-kubelet's own resolution is switched off: it rejects
// fieldRef status.podIP (which Istio's sidecar uses) and drops resourceFieldRef (which
// the chart uses), and it runs before the pod has an IP. The node resolves env here,
// when the container starts, as the kubelet does.

import (
	"context"
	"fmt"
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// expandEnv replaces $(VAR) with earlier variables; $$ is a literal $; unknown
// references stay as written (Kubernetes' rules).
func expandEnv(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if j := strings.IndexByte(s[i+2:], ')'); j >= 0 {
					name := s[i+2 : i+2+j]
					if v, ok := vars[name]; ok {
						b.WriteString(v)
					} else {
						b.WriteString(s[i : i+3+j])
					}
					i += 2 + j
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// expandAll expands $(VAR) in each of a command's or args' words.
func expandAll(words []string, vars map[string]string) []string {
	if words == nil {
		return nil
	}
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = expandEnv(w, vars)
	}
	return out
}

// apiServiceEnv is what the kubelet gives every container for the `kubernetes` Service
// (the pod's own env wins): in-cluster clients such as istiod find the API server by it.
func apiServiceEnv(hostPort string) map[string]string {
	m := map[string]string{}
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return m
	}
	addr := "tcp://" + net.JoinHostPort(host, port)
	m["KUBERNETES_SERVICE_HOST"] = host
	m["KUBERNETES_SERVICE_PORT"] = port
	m["KUBERNETES_SERVICE_PORT_HTTPS"] = port
	m["KUBERNETES_PORT"] = addr
	m["KUBERNETES_PORT_"+port+"_TCP"] = addr
	m["KUBERNETES_PORT_"+port+"_TCP_PROTO"] = "tcp"
	m["KUBERNETES_PORT_"+port+"_TCP_PORT"] = port
	m["KUBERNETES_PORT_"+port+"_TCP_ADDR"] = host
	return m
}

func (r *podRT) resolveEnv(ctx context.Context, c *corev1.Container) (map[string]string, error) {
	ns := r.pod.Namespace
	m := apiServiceEnv(r.p.cfg.APIService)
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := r.p.getConfigMap(ctx, ns, ef.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(ef.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom configMap %q: %w", ef.ConfigMapRef.Name, err)
			}
			for k, v := range cm.Data {
				m[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			s, err := r.p.getSecret(ctx, ns, ef.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(ef.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %q: %w", ef.SecretRef.Name, err)
			}
			for k, v := range s.Data {
				m[ef.Prefix+k] = string(v)
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			m[e.Name] = expandEnv(e.Value, m)
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.ConfigMapKeyRef != nil:
			cm, err := r.p.getConfigMap(ctx, ns, vf.ConfigMapKeyRef.Name)
			if err != nil && !(apierrors.IsNotFound(err) && optional(vf.ConfigMapKeyRef.Optional)) {
				return nil, fmt.Errorf("env %s: configMap %q: %w", e.Name, vf.ConfigMapKeyRef.Name, err)
			}
			if err == nil {
				v, ok := cm.Data[vf.ConfigMapKeyRef.Key]
				if !ok && !optional(vf.ConfigMapKeyRef.Optional) {
					return nil, fmt.Errorf("env %s: configMap %q has no key %q", e.Name, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
				}
				if ok {
					m[e.Name] = v
				}
			}
		case vf.SecretKeyRef != nil:
			s, err := r.p.getSecret(ctx, ns, vf.SecretKeyRef.Name)
			if err != nil && !(apierrors.IsNotFound(err) && optional(vf.SecretKeyRef.Optional)) {
				return nil, fmt.Errorf("env %s: secret %q: %w", e.Name, vf.SecretKeyRef.Name, err)
			}
			if err == nil {
				v, ok := s.Data[vf.SecretKeyRef.Key]
				if !ok && !optional(vf.SecretKeyRef.Optional) {
					return nil, fmt.Errorf("env %s: secret %q has no key %q", e.Name, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)
				}
				if ok {
					m[e.Name] = string(v)
				}
			}
		case vf.FieldRef != nil:
			v, err := r.fieldValue(vf.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			m[e.Name] = v
		case vf.ResourceFieldRef != nil:
			v, err := r.resourceValue(vf.ResourceFieldRef, c.Name)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			m[e.Name] = v
		}
	}
	return m, nil
}
