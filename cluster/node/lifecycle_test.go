package main

// Pod lifecycle without an API server: the Provider is driven as virtual-kubelet
// drives it (CreatePod, status notifications, logs, exec, DeletePod) on a test bridge.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestPodLifecycle(t *testing.T) {
	requireRootAndIP(t)
	pid := os.Getpid()
	bridge := fmt.Sprintf("smsbrlc%d", pid%1000000)
	_, podCIDR, _ := net.ParseCIDR("198.18.202.0/24")
	_, clusterCIDR, _ := net.ParseCIDR("198.18.0.0/15")
	alloc, _ := NewIPAllocator(podCIDR)
	nw := &Network{Bridge: bridge, PodCIDR: podCIDR, ClusterCIDR: clusterCIDR, Alloc: alloc}
	if _, err := nw.EnsureBridge(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nw.DeleteBridge() }()

	dir := t.TempDir()
	self, _ := os.Executable()
	images := filepath.Join(dir, "images.json")
	_ = os.WriteFile(images, []byte(fmt.Sprintf(`{
	  "test/helper": {"entrypoint": [%q, "-test.run=^$"], "env": {"SMS_NODE_TEST_HELPER": "listen"}},
	  "test/sh": {"entrypoint": ["/bin/sh", "-c"], "cmd": ["echo default"]}
	}`, self)), 0o644)
	stateDir := filepath.Join(dir, "state")
	_ = os.MkdirAll(stateDir, 0o755)
	st := &stateFile{path: filepath.Join(stateDir, "state.json"), st: NodeState{Bridge: bridge, Pods: map[string]PodNet{}}}
	p := &Provider{cfg: Config{NodeName: "test-node", NodeIP: "127.0.0.1", StateDir: stateDir, ImagesPath: images,
		DNSServer: "198.19.0.10", ClusterDomain: "cluster.local", CPUs: 2, MemoryBytes: 1 << 30, Net: nw},
		selfExe: self, state: st, pods: map[string]*podRT{}}
	var mu sync.Mutex
	var last *corev1.Pod
	p.NotifyPods(context.Background(), func(pod *corev1.Pod) { mu.Lock(); last = pod; mu.Unlock() })
	latest := func() *corev1.Pod { mu.Lock(); defer mu.Unlock(); return last }

	grace := int64(3)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "lc", Namespace: "sms", UID: types.UID(fmt.Sprintf("%08x-1c1c-4000-8000-000000000001", pid))},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: &grace,
			Volumes:                       []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{Name: "init", Image: "test/sh:1",
				Args:         []string{"echo from-init > /data/init.txt"},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Containers: []corev1.Container{
				{Name: "web", Image: "test/helper:1", Env: []corev1.EnvVar{{Name: "SMS_LISTEN", Value: ":8080"}, {Name: "SMS_VOL_FILE", Value: "/data/init.txt"}},
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}, PeriodSeconds: 1},
					VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}},
				{Name: "crash", Image: "test/sh", Args: []string{"echo boom; exit 3"}},
			},
		},
	}
	if err := p.CreatePod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	// On failure, stop what the pod started and remove its network too.
	defer func() {
		if r := p.get("sms", "lc"); r != nil {
			r.terminate(time.Second, false)
		}
	}()
	var got *corev1.Pod
	ok := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		got = latest()
		if got == nil || len(got.Status.ContainerStatuses) < 2 {
			continue
		}
		web, crash := got.Status.ContainerStatuses[0], got.Status.ContainerStatuses[1]
		if web.Ready && crash.RestartCount >= 1 && crash.LastTerminationState.Terminated != nil &&
			crash.State.Waiting != nil && crash.State.Waiting.Reason == "CrashLoopBackOff" {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatalf("pod did not reach web ready + crash in CrashLoopBackOff: %+v", got.Status)
	}
	if got.Status.Phase != corev1.PodRunning || got.Status.PodIP == "" || got.Status.InitContainerStatuses[0].State.Terminated == nil {
		t.Errorf("status %+v", got.Status)
	}
	if code := got.Status.ContainerStatuses[1].LastTerminationState.Terminated.ExitCode; code != 3 {
		t.Errorf("crash exit code %d", code)
	}
	// The pod answers on its IP, and sees what the init container wrote.
	c, err := net.DialTimeout("tcp", net.JoinHostPort(got.Status.PodIP, "8080"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(reply), "vol=from-init") || !strings.Contains(string(reply), "host=lc ") {
		t.Errorf("pod answered %q", reply)
	}
	// Logs (with previous run) and exec.
	rc, _ := p.GetContainerLogs(context.Background(), "sms", "lc", "crash", api.ContainerLogOpts{Previous: true})
	logs, _ := io.ReadAll(rc)
	if strings.TrimSpace(string(logs)) != "boom" {
		t.Errorf("previous logs %q", logs)
	}
	r := p.get("sms", "lc")
	var out bytes.Buffer
	code, err := r.execInContainer(context.Background(), r.ctrs[0], []string{"/bin/sh", "-c", "cat /etc/resolv.conf; hostname"}, nil, &out, &out)
	if err != nil || code != 0 || !strings.Contains(out.String(), "nameserver 198.19.0.10") || !strings.Contains(out.String(), "lc") {
		t.Errorf("exec: %d %v %q", code, err, out.String())
	}
	pn := r.net

	// Deletion: SIGTERM is ignored by a pid 1 without handler, so SIGKILL at the grace.
	start := time.Now()
	del := pod.DeepCopy()
	del.DeletionGracePeriodSeconds = &grace
	if err := p.DeletePod(context.Background(), del); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := p.GetPod(context.Background(), "sms", "lc"); err != nil {
			break
		}
	}
	if _, err := p.GetPod(context.Background(), "sms", "lc"); err == nil {
		t.Fatal("pod still known 15 s after deletion")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("deletion took %s with a %d s grace", el, grace)
	}
	final := latest()
	if final.Status.Phase != corev1.PodFailed && final.Status.Phase != corev1.PodSucceeded {
		t.Errorf("final phase %s", final.Status.Phase)
	}
	for _, cs := range final.Status.ContainerStatuses {
		if cs.State.Terminated == nil {
			t.Errorf("container %s not terminated in the final status", cs.Name)
		}
	}
	if netnsExists(pn.NetNS) || linkExists(pn.HostVeth) {
		t.Errorf("network of the deleted pod left behind: %+v", pn)
	}
	if _, err := os.Stat(r.dir); err == nil {
		t.Errorf("pod dir %s left behind", r.dir)
	}
}
