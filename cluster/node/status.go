package main

// Pod status from the containers' states, computed as the kubelet does (phase,
// conditions, container statuses). Pure, so it is tested without processes.

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ctrSnap is one container's state at one moment.
type ctrSnap struct {
	Name, Image, ContainerID string
	Running                  bool
	StartedAt                time.Time
	Waiting                  *corev1.ContainerStateWaiting
	Terminated               *corev1.ContainerStateTerminated
	LastTerm                 *corev1.ContainerStateTerminated
	Restarts                 int32
	Ready, Started           bool
	Sidecar                  bool
}

func (s ctrSnap) status() corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: s.Name, Image: s.Image, ImageID: s.Image, ContainerID: s.ContainerID,
		Ready: s.Ready, RestartCount: s.Restarts}
	started := s.Started
	cs.Started = &started
	switch {
	case s.Running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(s.StartedAt)}
	case s.Terminated != nil:
		cs.State.Terminated = s.Terminated.DeepCopy()
	case s.Waiting != nil:
		cs.State.Waiting = s.Waiting.DeepCopy()
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	if s.LastTerm != nil {
		cs.LastTerminationState.Terminated = s.LastTerm.DeepCopy()
	}
	return cs
}

// podPhase follows the kubelet's getPhase.
func podPhase(policy corev1.RestartPolicy, initDone, initFailed bool, ctrs []ctrSnap) corev1.PodPhase {
	if initFailed {
		return corev1.PodFailed
	}
	if !initDone {
		return corev1.PodPending
	}
	var running, waiting, stopped, succeeded int
	for _, c := range ctrs {
		switch {
		case c.Running:
			running++
		case c.Terminated != nil:
			stopped++
			if c.Terminated.ExitCode == 0 {
				succeeded++
			}
		case c.LastTerm != nil: // waiting to restart after having run
			stopped++
			if c.LastTerm.ExitCode == 0 {
				succeeded++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		if policy == corev1.RestartPolicyAlways {
			return corev1.PodRunning
		}
		if stopped == succeeded {
			return corev1.PodSucceeded
		}
		if policy == corev1.RestartPolicyNever {
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

func condition(t corev1.PodConditionType, ok bool, reason string, since time.Time) corev1.PodCondition {
	c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(since)}
	if ok {
		c.Status = corev1.ConditionTrue
	} else {
		c.Reason = reason
	}
	return c
}

type podSnap struct {
	Policy               corev1.RestartPolicy
	Inits, Ctrs          []ctrSnap
	InitDone, InitFailed bool
	PodIP, HostIP        string
	StartTime            time.Time
	Reason, Message      string
	Transitions          map[corev1.PodConditionType]time.Time
}

func buildPodStatus(s podSnap) corev1.PodStatus {
	st := corev1.PodStatus{HostIP: s.HostIP, PodIP: s.PodIP, Reason: s.Reason, Message: s.Message}
	if s.HostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: s.HostIP}}
	}
	if s.PodIP != "" {
		st.PodIPs = []corev1.PodIP{{IP: s.PodIP}}
	}
	if !s.StartTime.IsZero() {
		t := metav1.NewTime(s.StartTime)
		st.StartTime = &t
	}
	st.QOSClass = corev1.PodQOSBestEffort
	st.Phase = podPhase(s.Policy, s.InitDone, s.InitFailed, s.Ctrs)
	allReady := len(s.Ctrs) > 0
	for _, c := range s.Ctrs {
		st.ContainerStatuses = append(st.ContainerStatuses, c.status())
		allReady = allReady && c.Ready
	}
	for _, c := range s.Inits {
		cs := c.status()
		if !c.Sidecar {
			cs.Ready = c.Terminated != nil && c.Terminated.ExitCode == 0
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
		if c.Sidecar {
			allReady = allReady && c.Ready
		}
	}
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		allReady = false
	}
	tt := func(t corev1.PodConditionType) time.Time { return s.Transitions[t] }
	st.Conditions = []corev1.PodCondition{
		condition(corev1.PodReadyToStartContainers, s.PodIP != "", "", tt(corev1.PodReadyToStartContainers)),
		condition(corev1.PodInitialized, s.InitDone, "ContainersNotInitialized", tt(corev1.PodInitialized)),
		condition(corev1.ContainersReady, allReady, "ContainersNotReady", tt(corev1.ContainersReady)),
		condition(corev1.PodReady, allReady, "ContainersNotReady", tt(corev1.PodReady)),
		condition(corev1.PodScheduled, true, "", tt(corev1.PodScheduled)),
	}
	return st
}
