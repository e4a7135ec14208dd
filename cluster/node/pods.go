package main

// The life of one pod: its runtime state, the order of its life (setup, init containers
// in order, then the containers, each in its own restart loop with probes) and its
// status as the API sees it. The steps are beside it: pod_setup.go, container_start.go,
// container_restart.go, probes.go, container_exec.go and pod_stop.go.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// proc is one run of a container.
type proc struct {
	cmd      *exec.Cmd
	pid      int
	started  time.Time
	done     chan struct{}
	exitCode int32
	finished time.Time
	env      []string
	uid, gid *int
	workDir  string
}

type containerRT struct {
	spec    corev1.Container
	init    bool
	sidecar bool // an init container with restartPolicy Always
	logDir  string

	// guarded by podRT.mu
	proc       *proc
	waiting    *corev1.ContainerStateWaiting
	terminated *corev1.ContainerStateTerminated
	lastTerm   *corev1.ContainerStateTerminated
	restarts   int32
	runs       int
	ready      bool
	started    bool
	killMsg    string // why the node killed the current run (liveness, startup)
}

type podRT struct {
	p   *Provider
	key string
	dir string

	mu          sync.Mutex
	pod         *corev1.Pod // as handed to CreatePod (env resolved)
	orig        *corev1.Pod // as stored in the API (unresolved env), for the gaps
	net         PodNet
	podIP       string
	inits, ctrs []*containerRT
	initDone    bool
	initFailed  bool
	reason, msg string
	startTime   time.Time
	volumes     map[string]string
	transitions map[corev1.PodConditionType]time.Time
	lastCond    map[corev1.PodConditionType]corev1.ConditionStatus
	finalPhase  corev1.PodPhase
	terminating bool

	ctx     context.Context
	cancel  context.CancelFunc
	loops   sync.WaitGroup
	stopped chan struct{}
}

func newPodRT(p *Provider, pod, orig *corev1.Pod) *podRT {
	ctx, cancel := context.WithCancel(context.Background())
	r := &podRT{p: p, key: pod.Namespace + "/" + pod.Name, pod: pod, orig: orig,
		dir: filepath.Join(p.cfg.StateDir, "pods", string(pod.UID)), startTime: time.Now(),
		transitions: map[corev1.PodConditionType]time.Time{}, lastCond: map[corev1.PodConditionType]corev1.ConditionStatus{},
		ctx: ctx, cancel: cancel, stopped: make(chan struct{})}
	for _, c := range pod.Spec.InitContainers {
		side := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		r.inits = append(r.inits, &containerRT{spec: c, init: true, sidecar: side, logDir: filepath.Join(r.dir, "logs", c.Name)})
	}
	for _, c := range pod.Spec.Containers {
		r.ctrs = append(r.ctrs, &containerRT{spec: c, logDir: filepath.Join(r.dir, "logs", c.Name)})
	}
	return r
}

func (r *podRT) logf(format string, a ...any) {
	log.G(context.Background()).Infof("pod %s: "+format, append([]any{r.key}, a...)...)
}

func (r *podRT) notify() { r.p.notify(r.snapshotPod()) }

func (r *podRT) snap(c *containerRT) ctrSnap {
	s := ctrSnap{Name: c.spec.Name, Image: c.spec.Image, Waiting: c.waiting, Terminated: c.terminated,
		LastTerm: c.lastTerm, Restarts: c.restarts, Ready: c.ready, Started: c.started, Sidecar: c.sidecar}
	if c.proc != nil {
		s.ContainerID = fmt.Sprintf("sms://%s/%s/%d", r.pod.UID, c.spec.Name, c.runs)
		select {
		case <-c.proc.done:
		default:
			s.Running, s.StartedAt = true, c.proc.started
		}
	}
	return s
}

// snapshotPod is the pod with its current status (a copy: the caller may keep it).
func (r *podRT) snapshotPod() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := podSnap{Policy: r.pod.Spec.RestartPolicy, InitDone: r.initDone, InitFailed: r.initFailed,
		PodIP: r.podIP, HostIP: r.p.cfg.NodeIP, StartTime: r.startTime, Reason: r.reason, Message: r.msg,
		Transitions: r.transitions}
	for _, c := range r.inits {
		s.Inits = append(s.Inits, r.snap(c))
	}
	for _, c := range r.ctrs {
		s.Ctrs = append(s.Ctrs, r.snap(c))
	}
	st := buildPodStatus(s)
	if r.finalPhase != "" {
		st.Phase = r.finalPhase
	}
	if r.pod.Status.QOSClass != "" { // set by the API server and immutable
		st.QOSClass = r.pod.Status.QOSClass
	}
	// Transition times move only when a condition's status changes.
	for i, c := range st.Conditions {
		if prev, ok := r.lastCond[c.Type]; !ok || prev != c.Status {
			r.lastCond[c.Type] = c.Status
			r.transitions[c.Type] = time.Now()
		}
		st.Conditions[i].LastTransitionTime.Time = r.transitions[c.Type]
	}
	out := r.pod.DeepCopy()
	out.Status = st
	return out
}

func (r *podRT) setWaitingAll(reason, msg string) {
	r.mu.Lock()
	for _, c := range append(append([]*containerRT{}, r.inits...), r.ctrs...) {
		if c.proc == nil && c.terminated == nil {
			c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		}
	}
	r.mu.Unlock()
	r.notify()
}

// run drives the pod until it is terminated.
func (r *podRT) run() {
	r.setWaitingAll("ContainerCreating", "")
	for attempt := 1; ; attempt++ {
		err := r.setup()
		if err == nil {
			break
		}
		r.logf("setup failed (attempt %d): %v", attempt, err)
		r.setWaitingAll("CreateContainerConfigError", err.Error())
		if !sleepCtx(r.ctx, time.Duration(min(attempt, 6))*5*time.Second) {
			return
		}
	}
	r.setWaitingAll("PodInitializing", "")
	for _, c := range r.inits {
		if c.sidecar {
			r.loops.Add(1)
			go r.containerLoop(c)
			for !r.isStarted(c) {
				if !sleepCtx(r.ctx, 200*time.Millisecond) {
					return
				}
			}
			continue
		}
		if !r.runInit(c) {
			return
		}
	}
	r.mu.Lock()
	r.initDone = true
	r.mu.Unlock()
	r.notify()
	for _, c := range r.ctrs {
		r.loops.Add(1)
		go r.containerLoop(c)
	}
}

func (r *podRT) isStarted(c *containerRT) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return c.started
}

func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t) }
