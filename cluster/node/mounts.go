package main

// Containers see their volumes at mountPath without the host's file system changing:
// each container runs in a mount namespace of its own (cloned by the spawner), where
// `sms-node container-init <spec>` mounts an overlay (upper and work dirs on a tmpfs
// private to the container) over each top-level directory in which a mountPath must be
// created, bind-mounts the volumes, joins the pod's network namespace, drops to the
// container's user and execs the program, so the PID the node tracks is the program's.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

type MountSpec struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// InitSpec is everything container-init needs; written as JSON by the node.
type InitSpec struct {
	NetNS    string      `json:"netns,omitempty"` // /run/netns/<name>; empty: host network
	Hostname string      `json:"hostname"`
	Scratch  string      `json:"scratch"` // where the overlays' tmpfs is mounted
	Overlays []string    `json:"overlays,omitempty"`
	NewTops  []string    `json:"newTops,omitempty"` // top-level dirs the host lacks: a new root is built
	Mounts   []MountSpec `json:"mounts,omitempty"`
	UID      *int        `json:"uid,omitempty"`
	GID      *int        `json:"gid,omitempty"`
	Groups   []int       `json:"groups,omitempty"`
	WorkDir  string      `json:"workDir,omitempty"`
	Argv     []string    `json:"argv"`
}

// resolveTarget returns mountPath with symlinks in its existing part resolved (e.g.
// /var/run -> /run), whether it exists, and the top-level directory that holds it.
func resolveTarget(p string) (real string, exists bool, top string) {
	p = filepath.Clean("/" + p)
	existing, rest := p, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
	if r, err := filepath.EvalSymlinks(existing); err == nil {
		existing = r
	}
	real = filepath.Join(existing, rest)
	exists = rest == ""
	parts := strings.SplitN(strings.TrimPrefix(real, "/"), "/", 2)
	top = "/" + parts[0]
	return real, exists, top
}

func nearestExisting(p string) string {
	for p != "/" {
		if _, err := os.Lstat(p); err == nil {
			return p
		}
		p = filepath.Dir(p)
	}
	return ""
}

// planMounts resolves the targets and lists the top-level directories that need an
// overlay because a mount point must be created inside them, and the top-level
// directories the host lacks (e.g. /data): for those container-init builds a new root
// (a tmpfs holding bind mounts of the host's top-level entries) and pivots into it.
func planMounts(mounts []MountSpec) ([]MountSpec, []string, []string, error) {
	out := make([]MountSpec, 0, len(mounts))
	tops, newTops := map[string]bool{}, map[string]bool{}
	for _, m := range mounts {
		real, exists, top := resolveTarget(m.Dst)
		if real == "/" {
			return nil, nil, nil, fmt.Errorf("mountPath %q: cannot mount over /", m.Dst)
		}
		if !exists {
			if a := nearestExisting(real); a != "" {
				if fi, err := os.Stat(a); err == nil && !fi.IsDir() {
					return nil, nil, nil, fmt.Errorf("mountPath %q: %s is not a directory", m.Dst, a)
				}
			}
			fi, err := os.Stat(top)
			switch {
			case err != nil:
				newTops[top] = true
			case !fi.IsDir():
				return nil, nil, nil, fmt.Errorf("mountPath %q: %s is not a directory on this node", m.Dst, top)
			case real != top:
				tops[top] = true
			}
		}
		m.Dst = real
		out = append(out, m)
	}
	// Parents before children, so a nested mount lands on top of its parent.
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(out[i].Dst, "/") < strings.Count(out[j].Dst, "/")
	})
	var ov, nt []string
	for t := range tops {
		if !newTops[t] {
			ov = append(ov, t)
		}
	}
	for t := range newTops {
		nt = append(nt, t)
	}
	sort.Strings(ov)
	sort.Strings(nt)
	return out, ov, nt, nil
}

// newRoot builds a root with every top-level entry of the host (bind mounts, symlinks
// as symlinks) plus the missing top-level directories, and pivots into it, so the
// mount namespace's root is the new one (exec through nsenter sees the same).
func newRoot(root string, tops []string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind new root: %w", err)
	}
	entries, err := os.ReadDir("/")
	if err != nil {
		return err
	}
	for _, e := range entries {
		src, dst := "/"+e.Name(), filepath.Join(root, e.Name())
		fi, err := os.Lstat(src)
		if err != nil {
			continue
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			t, err := os.Readlink(src)
			if err == nil {
				err = os.Symlink(t, dst)
			}
			if err != nil {
				return err
			}
			continue
		case fi.IsDir():
			if err := os.Mkdir(dst, fi.Mode().Perm()); err != nil {
				return err
			}
		default:
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
	}
	for _, t := range tops {
		if err := os.MkdirAll(filepath.Join(root, t), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	return unix.Chdir("/")
}

// containerInit runs as the first program of a new container (pid 1 of its own PID
// namespace, in its own mount namespace) and ends by exec'ing the container's program.
// Errors are written to fd 3, a close-on-exec pipe the node reads: EOF means exec'd.
func containerInit(specPath string) {
	runtime.LockOSThread() // setns(CLONE_NEWNET) applies to this thread, which then execs
	errw := os.NewFile(3, "start-error")
	syscall.CloseOnExec(3)
	fail := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintln(os.Stderr, "sms-node container-init: "+msg)
		if errw != nil {
			fmt.Fprint(errw, msg)
		}
		os.Exit(128)
	}
	b, err := os.ReadFile(specPath)
	if err != nil {
		fail("%v", err)
	}
	var spec InitSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		fail("spec: %v", err)
	}
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail("make / private: %v", err)
	}
	// Open what is needed by path before any mount can hide it (an overlay over /run
	// hides /run/netns, a volume over /tmp hides a state dir below it).
	nsfd := -1
	if spec.NetNS != "" {
		if nsfd, err = unix.Open(spec.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			fail("open %s: %v", spec.NetNS, err)
		}
	}
	if len(spec.Overlays) > 0 || len(spec.NewTops) > 0 {
		if err := unix.Mount("tmpfs", spec.Scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=256m,mode=0755"); err != nil {
			fail("tmpfs on %s: %v", spec.Scratch, err)
		}
		for i := range spec.Overlays {
			base := filepath.Join(spec.Scratch, fmt.Sprint(i))
			for _, d := range []string{"upper", "work"} {
				if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
					fail("%v", err)
				}
			}
		}
		if len(spec.NewTops) > 0 {
			// The host's paths (state dir, scratch tmpfs) stay reachable in the new root.
			if err := newRoot(filepath.Join(spec.Scratch, "root"), spec.NewTops); err != nil {
				fail("new root: %v", err)
			}
		}
	}
	// Sources are opened now, before any overlay or volume hides their paths.
	srcFds := make([]int, len(spec.Mounts))
	for i, m := range spec.Mounts {
		if srcFds[i], err = unix.Open(m.Src, unix.O_PATH|unix.O_CLOEXEC, 0); err != nil {
			fail("volume source %s: %v", m.Src, err)
		}
	}
	if len(spec.Overlays) > 0 {
		scratchFd, err := unix.Open(spec.Scratch, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			fail("open %s: %v", spec.Scratch, err)
		}
		for i, top := range spec.Overlays {
			fdBase := fmt.Sprintf("/proc/self/fd/%d/%d", scratchFd, i)
			opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", top, fdBase, fdBase)
			if err := unix.Mount("overlay", top, "overlay", 0, opts); err != nil {
				fail("overlay on %s: %v", top, err)
			}
		}
	}
	for i, m := range spec.Mounts {
		src := fmt.Sprintf("/proc/self/fd/%d", srcFds[i])
		fi, err := os.Stat(src)
		if err != nil {
			fail("volume source %s: %v", m.Src, err)
		}
		if fi.IsDir() {
			err = os.MkdirAll(m.Dst, 0o755)
		} else if _, serr := os.Stat(m.Dst); serr != nil {
			if err = os.MkdirAll(filepath.Dir(m.Dst), 0o755); err == nil {
				var f *os.File
				if f, err = os.OpenFile(m.Dst, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
					f.Close()
				}
			}
		}
		if err != nil {
			fail("mount point %s: %v", m.Dst, err)
		}
		if err := unix.Mount(src, m.Dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			fail("bind %s on %s: %v", m.Src, m.Dst, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", m.Dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				fail("read-only %s: %v", m.Dst, err)
			}
		}
		unix.Close(srcFds[i])
	}
	// A /proc of the container's own PID namespace, as in a real container.
	_ = unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if nsfd >= 0 {
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			fail("join network namespace %s: %v", spec.NetNS, err)
		}
		unix.Close(nsfd)
	}
	if spec.Hostname != "" {
		_ = unix.Sethostname([]byte(spec.Hostname))
	}
	if spec.GID != nil || spec.UID != nil {
		groups := spec.Groups
		if err := unix.Setgroups(groups); err != nil {
			fail("setgroups: %v", err)
		}
		if spec.GID != nil {
			if err := unix.Setresgid(*spec.GID, *spec.GID, *spec.GID); err != nil {
				fail("setgid %d: %v", *spec.GID, err)
			}
		}
		if spec.UID != nil {
			if err := unix.Setresuid(*spec.UID, *spec.UID, *spec.UID); err != nil {
				fail("setuid %d: %v", *spec.UID, err)
			}
		}
		// A credential change clears the parent-death signal: set it again.
		_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	}
	wd := spec.WorkDir
	if wd == "" {
		wd = "/"
	}
	if err := os.Chdir(wd); err != nil {
		fail("workingDir %s: %v", wd, err)
	}
	prog := spec.Argv[0]
	if !strings.Contains(prog, "/") {
		if prog, err = exec.LookPath(prog); err != nil {
			fail("%s: not found in the container's PATH", spec.Argv[0])
		}
	}
	err = syscall.Exec(prog, spec.Argv, os.Environ())
	fail("exec %s: %v", prog, err)
}
