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
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
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
