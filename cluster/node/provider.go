package main

// Provider is virtual-kubelet's view of this node: it hands pods to podRT and answers
// the kubelet API (logs, exec, port-forward).

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/log"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	utilexec "k8s.io/utils/exec"
)

type Config struct {
	NodeName, NodeIP         string
	StateDir, ImagesPath     string
	HostPaths                hostPathMap
	DNSServer, ClusterDomain string
	APIService               string // HOST:PORT of the `kubernetes` Service; empty: no KUBERNETES_* env
	CPUs                     int
	MemoryBytes              int64
	Net                      *Network
}

type Provider struct {
	cfg          Config
	selfExe      string
	client       kubernetes.Interface
	podLister    corev1listers.PodLister
	cmLister     corev1listers.ConfigMapLister
	secretLister corev1listers.SecretLister
	state        *stateFile

	mu       sync.Mutex
	pods     map[string]*podRT
	notifyFn func(*corev1.Pod)
	quiet    atomic.Bool // node shutting down: no more status reports
}

func podKey(ns, name string) string { return ns + "/" + name }

func (p *Provider) notify(pod *corev1.Pod) {
	if p.quiet.Load() {
		return
	}
	p.mu.Lock()
	f := p.notifyFn
	p.mu.Unlock()
	if f != nil {
		f(pod)
	}
}

func (p *Provider) NotifyPods(_ context.Context, f func(*corev1.Pod)) {
	p.mu.Lock()
	p.notifyFn = f
	p.mu.Unlock()
}

func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	if old, ok := p.pods[key]; ok {
		p.mu.Unlock()
		if old.pod.UID == pod.UID {
			return nil
		}
		return fmt.Errorf("an earlier pod %s (uid %s) is still terminating", key, old.pod.UID)
	}
	var orig *corev1.Pod
	if p.podLister != nil {
		if o, err := p.podLister.Pods(pod.Namespace).Get(pod.Name); err == nil && o.UID == pod.UID {
			orig = o.DeepCopy()
		}
	}
	r := newPodRT(p, pod.DeepCopy(), orig)
	p.pods[key] = r
	p.mu.Unlock()
	log.G(ctx).Infof("pod %s: created (uid %s)", key, pod.UID)
	go r.run()
	return nil
}

// UpdatePod takes new labels and annotations; the rest of a pod's spec is immutable
// in practice (an image change is not applied: documented gap).
func (p *Provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	r := p.get(pod.Namespace, pod.Name)
	if r == nil {
		return errdefs.NotFoundf("pod %s/%s is not on this node", pod.Namespace, pod.Name)
	}
	r.mu.Lock()
	r.pod.Labels, r.pod.Annotations = pod.Labels, pod.Annotations
	r.pod.DeletionTimestamp, r.pod.DeletionGracePeriodSeconds = pod.DeletionTimestamp, pod.DeletionGracePeriodSeconds
	r.mu.Unlock()
	r.notify()
	return nil
}

// DeletePod returns at once: the termination (preStop, SIGTERM, grace, SIGKILL) runs
// in the background and ends with a terminal status, after which virtual-kubelet
// removes the pod object.
func (p *Provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	r := p.get(pod.Namespace, pod.Name)
	if r == nil || (pod.UID != "" && r.pod.UID != pod.UID) {
		return errdefs.NotFoundf("pod %s is not on this node", key)
	}
	grace := r.podGrace()
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	go func() {
		r.terminate(grace, true)
		p.mu.Lock()
		if p.pods[key] == r {
			delete(p.pods, key)
		}
		p.mu.Unlock()
	}()
	return nil
}

func (p *Provider) get(ns, name string) *podRT {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[podKey(ns, name)]
}

func (p *Provider) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	r := p.get(ns, name)
	if r == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	return r.snapshotPod(), nil
}

func (p *Provider) GetPodStatus(ctx context.Context, ns, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	rs := make([]*podRT, 0, len(p.pods))
	for _, r := range p.pods {
		rs = append(rs, r)
	}
	p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.snapshotPod())
	}
	sort.Slice(out, func(i, j int) bool {
		return podKey(out[i].Namespace, out[i].Name) < podKey(out[j].Namespace, out[j].Name)
	})
	return out, nil
}

func (p *Provider) container(ns, name, ctr string) (*podRT, *containerRT, error) {
	r := p.get(ns, name)
	if r == nil {
		return nil, nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	for _, c := range append(append([]*containerRT{}, r.ctrs...), r.inits...) {
		if c.spec.Name == ctr || (ctr == "" && len(r.ctrs) == 1) {
			return r, c, nil
		}
	}
	return nil, nil, errdefs.NotFoundf("container %q not found in pod %s/%s", ctr, ns, name)
}

func (p *Provider) GetContainerLogs(ctx context.Context, ns, name, ctr string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	r, c, err := p.container(ns, name, ctr)
	if err != nil {
		return nil, err
	}
	return readContainerLogs(ctx, c.logDir, opts, func() bool { return r.currentProc(c) != nil }), nil
}

// RunInContainer is kubectl exec. A TTY is not allocated: the command gets pipes.
func (p *Provider) RunInContainer(ctx context.Context, ns, name, ctr string, cmd []string, attach api.AttachIO) error {
	r, c, err := p.container(ns, name, ctr)
	if err != nil {
		return err
	}
	var stdout, stderr io.Writer
	if w := attach.Stdout(); w != nil {
		stdout = w
		defer w.Close()
	}
	if w := attach.Stderr(); w != nil {
		stderr = w
		defer w.Close()
	} else {
		stderr = stdout
	}
	code, err := r.execInContainer(ctx, c, cmd, attach.Stdin(), stdout, stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: int(code)}
	}
	return nil
}

func (p *Provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errdefs.InvalidInput("attach is not supported by sms-node: use kubectl logs -f or kubectl exec")
}

func (p *Provider) PortForward(ctx context.Context, ns, name string, port int32, stream io.ReadWriteCloser) error {
	r := p.get(ns, name)
	if r == nil {
		stream.Close()
		return errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	return r.portForward(ctx, port, stream)
}

func (p *Provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return statsSummary(p)
}

func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, errdefs.InvalidInput("resource metrics are not supported by sms-node (see /stats/summary)")
}

// shutdown stops every pod at once, bounded in total, without reporting: the pods
// stay bound to this node and are started again when it comes back.
func (p *Provider) shutdown(total time.Duration) {
	p.quiet.Store(true)
	p.mu.Lock()
	rs := make([]*podRT, 0, len(p.pods))
	for _, r := range p.pods {
		rs = append(rs, r)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		g := min(r.podGrace(), total-5*time.Second)
		wg.Add(1)
		go func() { defer wg.Done(); r.terminate(g, false) }()
	}
	waitTimeout(&wg, total)
}
