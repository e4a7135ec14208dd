package main

// Minimal /stats/summary: per container CPU time and resident memory of the
// container's main process (read from /proc; its children are not counted).

import (
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

var nodeStart = time.Now()

// procUsage returns CPU time (ns) and RSS (bytes) of a process.
func procUsage(pid int) (cpuNs, rss uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return 0, 0, false
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	rssPages, _ := strconv.ParseUint(f[21], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return (utime + stime) * uint64(time.Second) / hz, rssPages * uint64(os.Getpagesize()), true
}

func statsSummary(p *Provider) (*statsv1alpha1.Summary, error) {
	now := metav1.Now()
	sum := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.cfg.NodeName, StartTime: metav1.NewTime(nodeStart)}}
	p.mu.Lock()
	rs := make([]*podRT, 0, len(p.pods))
	for _, r := range p.pods {
		rs = append(rs, r)
	}
	p.mu.Unlock()
	for _, r := range rs {
		ps := statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Name: r.pod.Name, Namespace: r.pod.Namespace, UID: string(r.pod.UID)},
			StartTime: metav1.NewTime(r.startTime)}
		var podCPU, podMem uint64
		for _, c := range r.ctrs {
			pr := r.currentProc(c)
			if pr == nil {
				continue
			}
			cpu, mem, ok := procUsage(pr.pid)
			if !ok {
				continue
			}
			podCPU += cpu
			podMem += mem
			cpuV, memV := cpu, mem
			ps.Containers = append(ps.Containers, statsv1alpha1.ContainerStats{Name: c.spec.Name, StartTime: metav1.NewTime(pr.started),
				CPU:    &statsv1alpha1.CPUStats{Time: now, UsageCoreNanoSeconds: &cpuV},
				Memory: &statsv1alpha1.MemoryStats{Time: now, RSSBytes: &memV, WorkingSetBytes: &memV}})
		}
		ps.CPU = &statsv1alpha1.CPUStats{Time: now, UsageCoreNanoSeconds: &podCPU}
		ps.Memory = &statsv1alpha1.MemoryStats{Time: now, RSSBytes: &podMem, WorkingSetBytes: &podMem}
		sum.Pods = append(sum.Pods, ps)
	}
	return sum, nil
}
