package main

// What a volume's files come from in the API: ConfigMaps and Secrets (from the informers'
// caches, else the API server), their keys as files, projected volumes and service
// account tokens requested for the pod.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (p *Provider) getConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if p.cmLister != nil {
		if cm, err := p.cmLister.ConfigMaps(ns).Get(name); err == nil {
			return cm, nil
		}
	}
	return p.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (p *Provider) getSecret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	if p.secretLister != nil {
		if s, err := p.secretLister.Secrets(ns).Get(name); err == nil {
			return s, nil
		}
	}
	return p.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath, def *int32, fallback os.FileMode, what string) ([]volFile, error) {
	var out []volFile
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, volFile{k, data[k], fileMode(nil, def, fallback)})
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("%s has no key %q", what, it.Key)
		}
		out = append(out, volFile{it.Path, v, fileMode(it.Mode, def, fallback)})
	}
	return out, nil
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	m := map[string][]byte{}
	for k, v := range cm.Data {
		m[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		m[k] = v
	}
	return m
}

func optional(b *bool) bool { return b != nil && *b }

func (p *Provider) configMapFiles(ctx context.Context, ns string, name string, items []corev1.KeyToPath, def *int32, opt *bool) ([]volFile, error) {
	cm, err := p.getConfigMap(ctx, ns, name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("configMap %q: %w", name, err)
	}
	return keyFiles(configMapData(cm), items, def, 0o644, "configMap "+name)
}

func (p *Provider) secretFiles(ctx context.Context, ns string, name string, items []corev1.KeyToPath, def *int32, opt *bool) ([]volFile, error) {
	s, err := p.getSecret(ctx, ns, name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional(opt) {
			return nil, nil
		}
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range s.Data {
		data[k] = v
	}
	for k, v := range s.StringData {
		data[k] = []byte(v)
	}
	return keyFiles(data, items, def, 0o644, "secret "+name)
}

func (r *podRT) projectedFiles(ctx context.Context, pv *corev1.ProjectedVolumeSource) ([]volFile, time.Time, error) {
	var out []volFile
	var refresh time.Time
	pod := r.pod
	for _, s := range pv.Sources {
		var files []volFile
		var err error
		switch {
		case s.ServiceAccountToken != nil:
			var tok string
			var exp time.Time
			tok, exp, err = r.p.requestToken(ctx, pod, s.ServiceAccountToken)
			if err == nil {
				files = []volFile{{s.ServiceAccountToken.Path, []byte(tok), fileMode(nil, pv.DefaultMode, 0o644)}}
				// Refreshed at 80 % of its life, as the kubelet does.
				now := time.Now()
				when := now.Add(exp.Sub(now) * 8 / 10)
				if refresh.IsZero() || when.Before(refresh) {
					refresh = when
				}
			}
		case s.ConfigMap != nil:
			files, err = r.p.configMapFiles(ctx, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, pv.DefaultMode, s.ConfigMap.Optional)
		case s.Secret != nil:
			files, err = r.p.secretFiles(ctx, pod.Namespace, s.Secret.Name, s.Secret.Items, pv.DefaultMode, s.Secret.Optional)
		case s.DownwardAPI != nil:
			files, err = r.downwardFiles(s.DownwardAPI.Items, pv.DefaultMode)
		case s.ClusterTrustBundle != nil || s.PodCertificate != nil:
			err = fmt.Errorf("projected source not supported by sms-node")
		}
		if err != nil {
			return nil, refresh, err
		}
		out = append(out, files...)
	}
	return out, refresh, nil
}

func (p *Provider) requestToken(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, time.Time, error) {
	exp := int64(3600)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	res, err := p.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token for service account %q: %w", sa, err)
	}
	return res.Status.Token, res.Status.ExpirationTimestamp.Time, nil
}
