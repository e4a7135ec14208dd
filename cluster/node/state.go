package main

// state.json records every network object the node creates, so that an instance that
// died without cleaning up (kill -9) is cleaned up by the next one.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

type NodeState struct {
	Bridge        string            `json:"bridge"`
	BridgeCreated bool              `json:"bridgeCreated"`
	Pods          map[string]PodNet `json:"pods"` // by pod UID
}

type stateFile struct {
	mu   sync.Mutex
	path string
	st   NodeState
}

func loadState(path string) (NodeState, error) {
	st := NodeState{Pods: map[string]PodNet{}}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return NodeState{Pods: map[string]PodNet{}}, fmt.Errorf("%s: %w", path, err)
	}
	if st.Pods == nil {
		st.Pods = map[string]PodNet{}
	}
	return st, nil
}

// save writes atomically: a crash mid-write must not lose what exists.
func (s *stateFile) save() error {
	b, _ := json.MarshalIndent(s.st, "", "  ")
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

func (s *stateFile) update(f func(*NodeState)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
	return s.save()
}

type CleanupPlan struct {
	NetNS  []string
	Links  []string
	Bridge string
}

func (p CleanupPlan) Empty() bool { return len(p.NetNS) == 0 && len(p.Links) == 0 && p.Bridge == "" }

func (p CleanupPlan) String() string {
	var parts []string
	if len(p.NetNS) > 0 {
		parts = append(parts, fmt.Sprintf("%d network namespaces (%s)", len(p.NetNS), strings.Join(p.NetNS, " ")))
	}
	if len(p.Links) > 0 {
		parts = append(parts, fmt.Sprintf("%d veths (%s)", len(p.Links), strings.Join(p.Links, " ")))
	}
	if p.Bridge != "" {
		parts = append(parts, "bridge "+p.Bridge)
	}
	return strings.Join(parts, ", ")
}

// planCleanup lists what a previous instance recorded and is still there. Only what
// state.json names is touched: other namespaces and links on the machine are not ours.
func planCleanup(st NodeState, netns, links []string) CleanupPlan {
	hasNS, hasLink := toSet(netns), toSet(links)
	var p CleanupPlan
	for _, pn := range st.Pods {
		if pn.NetNS != "" && hasNS[pn.NetNS] {
			p.NetNS = append(p.NetNS, pn.NetNS)
		}
		if pn.HostVeth != "" && hasLink[pn.HostVeth] {
			p.Links = append(p.Links, pn.HostVeth)
		}
	}
	if st.BridgeCreated && st.Bridge != "" && hasLink[st.Bridge] {
		p.Bridge = st.Bridge
	}
	sort.Strings(p.NetNS)
	sort.Strings(p.Links)
	return p
}

func toSet(l []string) map[string]bool {
	m := make(map[string]bool, len(l))
	for _, s := range l {
		m[s] = true
	}
	return m
}

func sortStrings(s []string) { sort.Strings(s) }

// cleanupPrevious carries out the plan; pods' files from the dead instance go too.
func cleanupPrevious(stateDir string, net *Network) (CleanupPlan, error) {
	st, err := loadState(filepath.Join(stateDir, "state.json"))
	if err != nil {
		return CleanupPlan{}, err
	}
	plan := planCleanup(st, listNetns(), listLinks())
	for _, ns := range plan.NetNS {
		_ = ipCmd("netns", "del", ns)
	}
	for _, l := range plan.Links {
		if linkExists(l) {
			_ = ipCmd("link", "del", l)
		}
	}
	if plan.Bridge != "" {
		_ = ipCmd("link", "del", plan.Bridge)
	}
	_ = os.RemoveAll(filepath.Join(stateDir, "pods"))
	return plan, nil
}
