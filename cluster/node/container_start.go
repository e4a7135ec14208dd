package main

// One run of a container: its image looked up in the node's table, its argv, env,
// credentials and mounts written as a spec, and container-init started on it in new
// mount, PID and UTS namespaces.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

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
