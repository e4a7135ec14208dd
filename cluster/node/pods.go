package main

// The life of one pod: network and volumes, init containers in order, then the
// containers, each in its own restart loop with probes; and its termination.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
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

type imageError struct{ msg string }

func (e imageError) Error() string { return e.msg }

// startContainer starts one run of the container through container-init.
func (r *podRT) startContainer(c *containerRT) (*proc, error) {
	table, err := loadImageTable(r.p.cfg.ImagesPath)
	if err != nil {
		return nil, imageError{err.Error()}
	}
	entry, repo, ok := lookupImage(table, c.spec.Image)
	if !ok {
		return nil, imageError{fmt.Sprintf("image %q (repository %q) is not in this node's image table %s", c.spec.Image, repo, r.p.cfg.ImagesPath)}
	}
	podEnv, err := r.resolveEnv(r.ctx, &c.spec)
	if err != nil {
		return nil, err
	}
	// $(VAR) in the pod's command and args is the container's env, as the kubelet expands
	// it (Istio's sidecar passes `--domain $(POD_NAMESPACE).svc.cluster.local`).
	argv, err := resolveArgv(entry, expandAll(c.spec.Command, podEnv), expandAll(c.spec.Args, podEnv))
	if err != nil {
		return nil, err
	}
	uid, gid, groups := r.credentials(c)
	euid := 0
	if uid != nil {
		euid = *uid
	}
	env := containerEnv(entry, podEnv, r.pod.Name, euid)

	r.mu.Lock()
	vols := r.volumes
	netns := ""
	if r.net.NetNS != "" {
		netns = "/run/netns/" + r.net.NetNS
	}
	r.mu.Unlock()
	var mounts []MountSpec
	own := map[string]bool{}
	for _, vm := range c.spec.VolumeMounts {
		src, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q: no volume of that name", vm.Name)
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+vm.SubPath))
			if _, err := os.Stat(src); err != nil {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return nil, err
				}
			}
		}
		mounts = append(mounts, MountSpec{Src: src, Dst: vm.MountPath, ReadOnly: vm.ReadOnly})
		own[filepath.Clean(vm.MountPath)] = true
	}
	// The image's own files at the paths the pod spec may name (the Prometheus Operator
	// runs /bin/prometheus-config-reloader by its path in its image).
	for _, dst := range sortedKeys(entry.Files) {
		if !own[filepath.Clean(dst)] {
			mounts = append(mounts, MountSpec{Src: entry.Files[dst], Dst: dst, ReadOnly: true})
		}
	}
	for _, f := range []string{"resolv.conf", "hosts"} {
		if !own["/etc/"+f] {
			mounts = append(mounts, MountSpec{Src: filepath.Join(r.dir, "etc", f), Dst: "/etc/" + f, ReadOnly: true})
		}
	}
	mounts, overlays, newTops, err := planMounts(mounts)
	if err != nil {
		return nil, err
	}
	hostname := r.pod.Name
	if r.pod.Spec.Hostname != "" {
		hostname = r.pod.Spec.Hostname
	}
	scratch := filepath.Join(r.dir, "scratch", c.spec.Name)
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return nil, err
	}
	spec := InitSpec{NetNS: netns, Hostname: hostname, Scratch: scratch, Overlays: overlays, NewTops: newTops, Mounts: mounts,
		UID: uid, GID: gid, Groups: groups, WorkDir: workDir(entry, c.spec.WorkingDir), Argv: argv}
	specPath := filepath.Join(r.dir, "specs", c.spec.Name+".json")
	_ = os.MkdirAll(filepath.Dir(specPath), 0o755)
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		return nil, err
	}
	lf, err := openRunLog(c.logDir)
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		lf.Close()
		return nil, err
	}
	stdout, stderr := &streamWriter{l: lf, stream: "stdout"}, &streamWriter{l: lf, stream: "stderr"}
	cmd := exec.Command(r.p.selfExe, "container-init", specPath)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{errW}
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS}
	if err := startProcess(cmd); err != nil {
		errR.Close()
		errW.Close()
		lf.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	errW.Close()
	pr := &proc{cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), done: make(chan struct{}), env: env,
		uid: uid, gid: gid, workDir: workDir(entry, c.spec.WorkingDir)}
	go func() {
		err := cmd.Wait()
		stdout.Flush()
		stderr.Flush()
		lf.Close()
		pr.finished = time.Now()
		pr.exitCode = exitCodeOf(cmd, err)
		close(pr.done)
	}()
	startMsg, _ := io.ReadAll(errR) // EOF at exec (close-on-exec) or at exit
	errR.Close()
	if len(startMsg) > 0 {
		<-pr.done
		return nil, fmt.Errorf("%s", startMsg)
	}
	return pr, nil
}

func exitCodeOf(cmd *exec.Cmd, err error) int32 {
	if cmd.ProcessState == nil {
		return 128
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			return 128 + int32(ws.Signal())
		}
		return int32(ws.ExitStatus())
	}
	return int32(cmd.ProcessState.ExitCode())
}

// credentials: the container's securityContext over the pod's; supplementary groups
// include fsGroup, so volumes the node gave to fsGroup are readable.
func (r *podRT) credentials(c *containerRT) (uid, gid *int, groups []int) {
	ps := r.pod.Spec.SecurityContext
	if ps != nil {
		if ps.RunAsUser != nil {
			v := int(*ps.RunAsUser)
			uid = &v
		}
		if ps.RunAsGroup != nil {
			v := int(*ps.RunAsGroup)
			gid = &v
		}
		for _, g := range ps.SupplementalGroups {
			groups = append(groups, int(g))
		}
		if ps.FSGroup != nil {
			groups = append(groups, int(*ps.FSGroup))
		}
	}
	if cs := c.spec.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			v := int(*cs.RunAsUser)
			uid = &v
		}
		if cs.RunAsGroup != nil {
			v := int(*cs.RunAsGroup)
			gid = &v
		}
	}
	if uid != nil && gid == nil {
		g := 0 // as a runtime does for a uid without a passwd entry
		gid = &g
	}
	if gid != nil && uid == nil {
		u := 0
		uid = &u
	}
	if groups == nil {
		groups = []int{}
	}
	return uid, gid, groups
}

// runOnce starts the container and waits for the run to end (probes run meanwhile for
// regular containers and sidecars). It returns nil when the container could not start.
func (r *podRT) runOnce(c *containerRT) (*corev1.ContainerStateTerminated, error) {
	pr, err := r.startContainer(c)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	c.runs++
	c.restarts = int32(c.runs - 1)
	c.proc, c.waiting, c.terminated, c.killMsg = pr, nil, nil, ""
	c.ready = false
	c.started = c.spec.StartupProbe == nil && (!c.init || c.sidecar)
	if c.init && !c.sidecar {
		c.started = true
	}
	r.mu.Unlock()
	r.notify()
	if r.ctx.Err() != nil { // terminated while starting: it must not survive
		_ = syscall.Kill(pr.pid, syscall.SIGKILL)
	}
	pctx, cancel := context.WithCancel(r.ctx)
	if !c.init || c.sidecar {
		go r.runProbes(pctx, c, pr)
	}
	<-pr.done
	cancel()
	reason := "Error"
	if pr.exitCode == 0 {
		reason = "Completed"
	}
	r.mu.Lock()
	term := &corev1.ContainerStateTerminated{ExitCode: pr.exitCode, Reason: reason, Message: c.killMsg,
		StartedAt: metaTime(pr.started), FinishedAt: metaTime(pr.finished), ContainerID: fmt.Sprintf("sms://%s/%s/%d", r.pod.UID, c.spec.Name, c.runs)}
	c.ready = false
	r.mu.Unlock()
	return term, nil
}

// waitBackoff shows the container waiting with reason and message while backing off.
func (r *podRT) waitBackoff(c *containerRT, d time.Duration, reason, msg string) bool {
	r.mu.Lock()
	c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
	r.mu.Unlock()
	r.notify()
	return sleepCtx(r.ctx, d)
}

// handleStartError backs off after a run that could not start (image missing, mount
// or exec failure), as the kubelet does for image pulls and create errors.
func (r *podRT) handleStartError(c *containerRT, bo *Backoff, err error) bool {
	d := max(bo.Next(0), 10*time.Second)
	r.logf("container %s: %v", c.spec.Name, err)
	reason, backReason := "CreateContainerError", "CreateContainerError"
	if _, ok := err.(imageError); ok {
		reason, backReason = "ErrImagePull", "ImagePullBackOff"
	}
	r.mu.Lock()
	c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
	r.mu.Unlock()
	r.notify()
	if !sleepCtx(r.ctx, 2*time.Second) {
		return false
	}
	return r.waitBackoff(c, d, backReason, fmt.Sprintf("Back-off %s: %v", d, err))
}

// runInit runs a regular init container to success; false: the pod does not go on.
func (r *podRT) runInit(c *containerRT) bool {
	bo := newBackoff()
	for r.ctx.Err() == nil {
		term, err := r.runOnce(c)
		if err != nil {
			if !r.handleStartError(c, bo, err) {
				return false
			}
			continue
		}
		if r.ctx.Err() != nil {
			r.setTerminated(c, term)
			return false
		}
		if term.ExitCode == 0 {
			r.setTerminated(c, term)
			r.notify()
			return true
		}
		if r.pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			r.mu.Lock()
			c.terminated, r.initFailed = term, true
			r.mu.Unlock()
			r.notify()
			return false
		}
		r.mu.Lock()
		c.lastTerm = term
		r.mu.Unlock()
		d := bo.Next(term.FinishedAt.Sub(term.StartedAt.Time))
		if !r.waitBackoff(c, d, "CrashLoopBackOff", r.backoffMsg(c, d)) {
			return false
		}
	}
	return false
}

func (r *podRT) setTerminated(c *containerRT, term *corev1.ContainerStateTerminated) {
	r.mu.Lock()
	c.terminated, c.waiting = term, nil
	r.mu.Unlock()
}

func (r *podRT) backoffMsg(c *containerRT, d time.Duration) string {
	return fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", d, c.spec.Name, r.pod.Name, r.pod.Namespace, r.pod.UID)
}

// containerLoop runs a container (or sidecar) with the pod's restart policy.
func (r *podRT) containerLoop(c *containerRT) {
	defer r.loops.Done()
	bo := newBackoff()
	for r.ctx.Err() == nil {
		term, err := r.runOnce(c)
		if err != nil {
			if !r.handleStartError(c, bo, err) {
				return
			}
			continue
		}
		if r.ctx.Err() != nil {
			r.setTerminated(c, term)
			r.notify()
			return
		}
		policy := r.pod.Spec.RestartPolicy
		restart := c.sidecar || policy == corev1.RestartPolicyAlways || policy == "" ||
			(policy == corev1.RestartPolicyOnFailure && term.ExitCode != 0)
		if !restart {
			r.setTerminated(c, term)
			r.notify()
			return
		}
		r.mu.Lock()
		c.lastTerm = term
		r.mu.Unlock()
		d := bo.Next(term.FinishedAt.Sub(term.StartedAt.Time))
		if d == 0 {
			r.mu.Lock()
			c.waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
			r.mu.Unlock()
			continue
		}
		if !r.waitBackoff(c, d, "CrashLoopBackOff", r.backoffMsg(c, d)) {
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

func (r *podRT) podGrace() time.Duration {
	if g := r.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// stopProc: preStop hook, SIGTERM, and SIGKILL at the deadline.
func (r *podRT) stopProc(c *containerRT, pr *proc, deadline time.Time, preStop bool) {
	select {
	case <-pr.done:
		return
	default:
	}
	if h := c.spec.Lifecycle; preStop && h != nil && h.PreStop != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if err := r.runHook(ctx, c, h.PreStop); err != nil {
			r.logf("container %s: preStop hook: %v", c.spec.Name, err)
		}
		cancel()
	}
	_ = syscall.Kill(pr.pid, syscall.SIGTERM)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-pr.done:
		return
	case <-t.C:
	}
	_ = syscall.Kill(pr.pid, syscall.SIGKILL) // pid 1 of its PID namespace: all of it goes
	select {
	case <-pr.done:
	case <-time.After(5 * time.Second):
	}
}

func (r *podRT) runHook(ctx context.Context, c *containerRT, h *corev1.LifecycleHandler) error {
	switch {
	case h.Sleep != nil:
		sleepCtx(ctx, time.Duration(h.Sleep.Seconds)*time.Second)
		return nil
	case h.Exec != nil:
		code, err := r.execInContainer(ctx, c, h.Exec.Command, nil, nil, nil)
		if err == nil && code != 0 {
			err = fmt.Errorf("exited with %d", code)
		}
		return err
	case h.HTTPGet != nil:
		p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: h.HTTPGet}}
		ok, msg := r.runProbeOnce(ctx, p, c, time.Until(deadlineOr(ctx, 30*time.Second)))
		if !ok {
			return fmt.Errorf("%s", msg)
		}
		return nil
	case h.TCPSocket != nil:
		return nil // deprecated and a no-op in the kubelet too
	}
	return nil
}

func deadlineOr(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}

// currentProc is the container's running process, if any.
func (r *podRT) currentProc(c *containerRT) *proc {
	r.mu.Lock()
	pr := c.proc
	r.mu.Unlock()
	if pr == nil {
		return nil
	}
	select {
	case <-pr.done:
		return nil
	default:
		return pr
	}
}

// execInContainer runs a command in the container's namespaces (mount, network, PID,
// UTS) with its user, environment and working directory, like nsenter(1) — which it uses.
func (r *podRT) execInContainer(ctx context.Context, c *containerRT, command []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	pr := r.currentProc(c)
	if pr == nil {
		return -1, fmt.Errorf("container %s is not running", c.spec.Name)
	}
	if len(command) == 0 {
		return -1, fmt.Errorf("no command")
	}
	wd := pr.workDir
	if wd == "" {
		wd = "/"
	}
	// --root: the target's root, which differs from its namespace's when it pivoted.
	args := []string{"--target", strconv.Itoa(pr.pid), "--mount", "--net", "--pid", "--uts", "--root", "--wd=" + wd}
	if pr.uid != nil {
		args = append(args, "--setuid", strconv.Itoa(*pr.uid), "--setgid", strconv.Itoa(*pr.gid))
	}
	args = append(append(args, "--"), command...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = pr.env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.WaitDelay = time.Second
	if err := startProcess(cmd); err != nil {
		return -1, err
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		return -1, fmt.Errorf("timed out: %w", ctx.Err())
	}
	if cmd.ProcessState == nil {
		return -1, err
	}
	return int(exitCodeOf(cmd, err)), nil
}

// terminate stops the pod as a deletion does. final: report the terminal status
// (deletion); a node shutdown does not, so the pod restarts with the node.
func (r *podRT) terminate(grace time.Duration, final bool) {
	r.mu.Lock()
	if r.terminating {
		r.mu.Unlock()
		<-r.stopped
		return
	}
	r.terminating = true
	r.mu.Unlock()
	r.cancel()
	deadline := time.Now().Add(grace)
	stopAll := func(list []*containerRT, dl time.Time) {
		var wg sync.WaitGroup
		for _, c := range list {
			if pr := r.currentProc(c); pr != nil {
				wg.Add(1)
				go func() { defer wg.Done(); r.stopProc(c, pr, dl, true) }()
			}
		}
		wg.Wait()
	}
	stopAll(r.ctrs, deadline)
	// Sidecars (and an init container still running) go after the main containers.
	stopAll(r.inits, maxTime(deadline, time.Now().Add(2*time.Second)))
	waitTimeout(&r.loops, 10*time.Second)
	for _, c := range append(append([]*containerRT{}, r.inits...), r.ctrs...) {
		if pr := r.currentProc(c); pr != nil {
			_ = syscall.Kill(pr.pid, syscall.SIGKILL)
			select {
			case <-pr.done:
			case <-time.After(5 * time.Second):
			}
		}
	}
	r.mu.Lock()
	pn := r.net
	allOK := true
	for _, c := range append(append([]*containerRT{}, r.inits...), r.ctrs...) {
		if c.terminated == nil {
			t := c.lastTerm
			if c.proc != nil {
				t = &corev1.ContainerStateTerminated{ExitCode: c.proc.exitCode, Reason: "Error",
					StartedAt: metaTime(c.proc.started), FinishedAt: metaTime(c.proc.finished)}
				if c.proc.exitCode == 0 {
					t.Reason = "Completed"
				}
			}
			if t == nil {
				t = &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown", Message: "The container could not be located when the pod was terminated"}
			}
			c.terminated = t
		}
		c.waiting, c.ready = nil, false
		if !c.init && c.terminated.ExitCode != 0 {
			allOK = false
		}
	}
	if allOK {
		r.finalPhase = corev1.PodSucceeded
	} else {
		r.finalPhase = corev1.PodFailed
	}
	r.mu.Unlock()
	if pn.NetNS != "" {
		r.p.cfg.Net.Teardown(pn)
		r.p.cfg.Net.Alloc.Release(net.ParseIP(pn.IP))
		_ = r.p.state.update(func(s *NodeState) { delete(s.Pods, string(r.pod.UID)) })
	}
	if final {
		r.notify()
		_ = os.RemoveAll(r.dir)
	}
	r.logf("stopped")
	close(r.stopped)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// portForward copies a stream to and from podIP:port, dialled from the node.
func (r *podRT) portForward(ctx context.Context, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	r.mu.Lock()
	ip := r.podIP
	r.mu.Unlock()
	if ip == "" {
		return fmt.Errorf("pod has no IP yet")
	}
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(int(port))))
	if err != nil {
		return err
	}
	defer conn.Close()
	// The client closing its side half-closes the connection; the pod's answer is
	// still copied until the pod closes.
	go func() { _, _ = io.Copy(conn, stream); closeWrite(conn) }()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(stream, conn); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t) }
