package main

// Every process the node starts gets PR_SET_PDEATHSIG=SIGKILL, so no container outlives
// the node, even after kill -9 of the node. The kernel sends that signal when the
// *thread* that forked the child exits, and Go moves goroutines between threads and may
// retire them, so all forks happen on one goroutine locked to its thread forever.

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   = make(chan spawnReq)
)

func spawnerLoop() {
	runtime.LockOSThread() // never unlocked: this thread lives as long as the node
	for r := range spawnCh {
		r.done <- r.cmd.Start()
	}
}

// startProcess starts cmd from the spawner thread with the parent-death signal set.
func startProcess(cmd *exec.Cmd) error {
	spawnOnce.Do(func() { go spawnerLoop() })
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	r := spawnReq{cmd: cmd, done: make(chan error, 1)}
	spawnCh <- r
	return <-r.done
}
