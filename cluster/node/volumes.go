package main

// Volumes are materialised as directories in the pod's state dir, then bind-mounted
// by container-init. Files are written by write-then-rename so a refreshed token or
// file is never seen half-written through the bind mount.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type volFile struct {
	path string
	data []byte
	mode os.FileMode
}

// hostPathMap maps the chart's hostPath (e.g. /mnt/shared/models) to a local folder.
type hostPathMap map[string]string

func (m hostPathMap) resolve(p string) (string, bool) {
	p = filepath.Clean(p)
	best := ""
	for src := range m {
		s := filepath.Clean(src)
		if (p == s || strings.HasPrefix(p, s+"/")) && len(s) > len(best) {
			best = s
		}
	}
	if best == "" {
		return "", false
	}
	for src, dst := range m {
		if filepath.Clean(src) == best {
			return filepath.Join(dst, strings.TrimPrefix(p, best)), true
		}
	}
	return "", false
}

func fileMode(item *int32, def *int32, fallback os.FileMode) os.FileMode {
	if item != nil {
		return os.FileMode(*item)
	}
	if def != nil {
		return os.FileMode(*def)
	}
	return fallback
}

// writeVolume replaces the files of a volume dir. fsGroup gets group ownership and
// read access, as the kubelet does, so non-root containers can read secrets.
func writeVolume(dir string, files []volFile, fsGroup *int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		rel := filepath.Clean("/" + f.path)
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
		mode := f.mode
		if fsGroup != nil {
			mode |= 0o040
		}
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, f.data) {
			continue // unchanged: a refresh must not wake the watchers of the file
		}
		if err := os.WriteFile(tmp, f.data, mode); err != nil {
			return err
		}
		_ = os.Chmod(tmp, mode)
		if fsGroup != nil {
			_ = os.Chown(tmp, 0, int(*fsGroup))
		}
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
	}
	return nil
}

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

// downwardFiles renders downwardAPI items; the pod IP is known because volumes are
// prepared after the network.
func (r *podRT) downwardFiles(items []corev1.DownwardAPIVolumeFile, def *int32) ([]volFile, error) {
	var out []volFile
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = r.fieldValue(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val, err = r.resourceValue(it.ResourceFieldRef, "")
		default:
			err = fmt.Errorf("downwardAPI item %q has no source", it.Path)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, volFile{it.Path, []byte(val), fileMode(it.Mode, def, 0o644)})
	}
	return out, nil
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// fieldValue answers a downward API fieldRef from the pod as this node runs it.
func (r *podRT) fieldValue(path string) (string, error) {
	pod := r.pod
	if strings.HasPrefix(path, "metadata.labels['") && strings.HasSuffix(path, "']") {
		return pod.Labels[strings.TrimSuffix(strings.TrimPrefix(path, "metadata.labels['"), "']")], nil
	}
	if strings.HasPrefix(path, "metadata.annotations['") && strings.HasSuffix(path, "']") {
		return pod.Annotations[strings.TrimSuffix(strings.TrimPrefix(path, "metadata.annotations['"), "']")], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return r.p.cfg.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return r.podIP, nil
	case "status.hostIP", "status.hostIPs":
		return r.p.cfg.NodeIP, nil
	}
	return "", fmt.Errorf("downward API field %q is not supported by sms-node", path)
}

// resourceValue answers a resourceFieldRef: limits fall back to the node's capacity
// and requests to the limit, as the kubelet does; the result is rounded up.
func (r *podRT) resourceValue(ref *corev1.ResourceFieldSelector, container string) (string, error) {
	if ref.ContainerName != "" {
		container = ref.ContainerName
	}
	var ctr *corev1.Container
	for i := range r.pod.Spec.Containers {
		if r.pod.Spec.Containers[i].Name == container {
			ctr = &r.pod.Spec.Containers[i]
		}
	}
	for i := range r.pod.Spec.InitContainers {
		if r.pod.Spec.InitContainers[i].Name == container {
			ctr = &r.pod.Spec.InitContainers[i]
		}
	}
	var res corev1.ResourceRequirements
	if ctr != nil {
		res = ctr.Resources
	}
	return resourceFieldValue(ref, res, r.p.cfg.CPUs, r.p.cfg.MemoryBytes)
}

func resourceFieldValue(ref *corev1.ResourceFieldSelector, res corev1.ResourceRequirements, nodeCPUs int, nodeMem int64) (string, error) {
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	var q resource.Quantity
	lookup := func(name corev1.ResourceName) (resource.Quantity, bool) {
		if v, ok := res.Limits[name]; ok {
			return v, true
		}
		return resource.Quantity{}, false
	}
	nodeVal := func(name corev1.ResourceName) resource.Quantity {
		if name == corev1.ResourceCPU {
			return *resource.NewQuantity(int64(nodeCPUs), resource.DecimalSI)
		}
		return *resource.NewQuantity(nodeMem, resource.BinarySI)
	}
	switch ref.Resource {
	case "limits.cpu", "limits.memory", "limits.ephemeral-storage":
		name := corev1.ResourceName(strings.TrimPrefix(ref.Resource, "limits."))
		var ok bool
		if q, ok = lookup(name); !ok {
			q = nodeVal(name)
		}
	case "requests.cpu", "requests.memory", "requests.ephemeral-storage":
		name := corev1.ResourceName(strings.TrimPrefix(ref.Resource, "requests."))
		var ok bool
		if q, ok = res.Requests[name]; !ok {
			q, _ = lookup(name)
		}
	default:
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	if strings.HasSuffix(ref.Resource, ".cpu") {
		m := q.MilliValue()
		d := divisor.MilliValue()
		if d == 0 {
			d = 1000
		}
		return fmt.Sprint((m + d - 1) / d), nil
	}
	v, d := q.Value(), divisor.Value()
	if d == 0 {
		d = 1
	}
	return fmt.Sprint((v + d - 1) / d), nil
}

// volumeSyncPeriod: how soon a changed ConfigMap or Secret reaches the pods that mount it
// (the kubelet's is about a minute; the Prometheus Operator rewrites its Prometheus'
// configuration Secret whenever a ServiceMonitor or rule changes).
const volumeSyncPeriod = 10 * time.Second

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// prepareVolumes materialises every volume of the pod; it returns the earliest time it
// must run again: a service account token to renew, ConfigMaps and Secrets to sync
// (zero: never).
func (r *podRT) prepareVolumes(ctx context.Context) (time.Time, error) {
	pod := r.pod
	var fsGroup *int64
	if pod.Spec.SecurityContext != nil {
		fsGroup = pod.Spec.SecurityContext.FSGroup
	}
	var refresh time.Time
	vols := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(r.dir, "volumes", v.Name)
		var files []volFile
		var err error
		switch {
		case v.EmptyDir != nil:
			if err = os.MkdirAll(dir, 0o777); err == nil {
				err = os.Chmod(dir, 0o777) // as the kubelet: any user of the pod may write
			}
		case v.HostPath != nil:
			local, ok := r.p.cfg.HostPaths.resolve(v.HostPath.Path)
			if !ok {
				return refresh, fmt.Errorf("volume %q: hostPath %s is not mapped on this node (sms-node --host-path %s=<local folder>)", v.Name, v.HostPath.Path, v.HostPath.Path)
			}
			t := corev1.HostPathUnset
			if v.HostPath.Type != nil {
				t = *v.HostPath.Type
			}
			if t == corev1.HostPathDirectoryOrCreate {
				_ = os.MkdirAll(local, 0o755)
			}
			fi, serr := os.Stat(local)
			switch {
			case serr != nil && t != corev1.HostPathUnset:
				err = fmt.Errorf("volume %q: hostPath %s (%s): %v", v.Name, v.HostPath.Path, local, serr)
			case serr == nil && t == corev1.HostPathDirectory && !fi.IsDir():
				err = fmt.Errorf("volume %q: hostPath %s (%s) is not a directory", v.Name, v.HostPath.Path, local)
			case serr != nil:
				err = os.MkdirAll(local, 0o755)
			}
			dir = local
		case v.ConfigMap != nil:
			refresh = earliest(refresh, time.Now().Add(volumeSyncPeriod))
			files, err = r.p.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
		case v.Secret != nil:
			refresh = earliest(refresh, time.Now().Add(volumeSyncPeriod))
			files, err = r.p.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
		case v.DownwardAPI != nil:
			files, err = r.downwardFiles(v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
		case v.Projected != nil:
			var when time.Time
			files, when, err = r.projectedFiles(ctx, v.Projected)
			if !when.IsZero() && (refresh.IsZero() || when.Before(refresh)) {
				refresh = when
			}
		default:
			err = fmt.Errorf("volume %q: this volume type is not supported by sms-node (supported: emptyDir, hostPath, configMap, secret, projected, downwardAPI)", v.Name)
		}
		if err != nil {
			return refresh, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if v.HostPath == nil && v.EmptyDir == nil {
			if err := writeVolume(dir, files, fsGroup); err != nil {
				return refresh, fmt.Errorf("volume %q: %w", v.Name, err)
			}
		}
		vols[v.Name] = dir
	}
	r.mu.Lock()
	r.volumes = vols
	r.mu.Unlock()
	return refresh, nil
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
