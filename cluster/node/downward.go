package main

// The downward API: a pod's own fields (fieldRef) and its containers' resources
// (resourceFieldRef) as this node runs them, for env and downwardAPI volumes.

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

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
