package main

// Pod networking with iproute2: one bridge, and per pod a network namespace joined to
// it by a veth pair. Pods get only a route to the cluster CIDR (services and pods),
// no default route, so nothing a pod sends can leave the machine.

import (
	"encoding/binary"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// IPAllocator hands out the pod CIDR's addresses after the bridge's (the first one).
// It moves forward through the range instead of reusing the lowest free address, so a
// deleted pod's IP is not handed straight to a new pod while endpoints still name it.
type IPAllocator struct {
	mu      sync.Mutex
	base    uint32
	size    uint32 // usable host offsets are 2 .. size-2
	used    map[uint32]bool
	nextOff uint32
}

func NewIPAllocator(cidr *net.IPNet) (*IPAllocator, error) {
	ip4 := cidr.IP.To4()
	if ip4 == nil {
		return nil, fmt.Errorf("pod CIDR %s is not IPv4", cidr)
	}
	ones, bits := cidr.Mask.Size()
	if bits-ones < 2 || bits-ones > 16 {
		return nil, fmt.Errorf("pod CIDR %s: prefix must be between /16 and /30", cidr)
	}
	return &IPAllocator{base: binary.BigEndian.Uint32(ip4.Mask(cidr.Mask)), size: 1 << uint(bits-ones),
		used: map[uint32]bool{}, nextOff: 2}, nil
}

func (a *IPAllocator) ip(off uint32) net.IP {
	b := make(net.IP, 4)
	binary.BigEndian.PutUint32(b, a.base+off)
	return b
}

// Gateway is the bridge's address: the CIDR's first host.
func (a *IPAllocator) Gateway() net.IP { return a.ip(1) }

func (a *IPAllocator) Allocate() (net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.size - 3 // minus network, gateway, broadcast
	for i := uint32(0); i < n; i++ {
		off := 2 + (a.nextOff-2+i)%n
		if !a.used[off] {
			a.used[off] = true
			a.nextOff = off + 1
			return a.ip(off), nil
		}
	}
	return nil, fmt.Errorf("pod CIDR exhausted (%d addresses in use)", len(a.used))
}

// Reserve marks an address as taken (used for the integration test and restarts).
func (a *IPAllocator) Reserve(ip net.IP) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.used[binary.BigEndian.Uint32(ip.To4())-a.base] = true
}

func (a *IPAllocator) Release(ip net.IP) {
	if ip == nil || ip.To4() == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.used, binary.BigEndian.Uint32(ip.To4())-a.base)
}

// PodNet is what one pod's network consists of; it is also what state.json records.
type PodNet struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	NetNS     string `json:"netns"`
	HostVeth  string `json:"hostVeth"`
	IP        string `json:"ip"`
}

// Names are derived from the pod UID: interface names are limited to 15 characters.
func shortID(uid string) string {
	s := strings.ReplaceAll(uid, "-", "")
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

func netnsName(uid string) string    { return "sms-" + shortID(uid) }
func hostVethName(uid string) string { return "vsms" + shortID(uid)[:10] }
func peerVethName(uid string) string { return "psms" + shortID(uid)[:10] }

type Network struct {
	Bridge      string
	PodCIDR     *net.IPNet
	ClusterCIDR *net.IPNet
	Alloc       *IPAllocator
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func linkExists(name string) bool {
	return exec.Command("ip", "link", "show", "dev", name).Run() == nil
}

// EnsureBridge creates and addresses the bridge if missing; it reports whether it did,
// so that only a bridge the node made is removed again.
func (n *Network) EnsureBridge() (bool, error) {
	created := false
	if !linkExists(n.Bridge) {
		if err := ipCmd("link", "add", n.Bridge, "type", "bridge"); err != nil {
			return false, err
		}
		created = true
	}
	ones, _ := n.PodCIDR.Mask.Size()
	addr := fmt.Sprintf("%s/%d", n.Alloc.Gateway(), ones)
	out, _ := exec.Command("ip", "-o", "addr", "show", "dev", n.Bridge).Output()
	if !strings.Contains(string(out), " "+addr+" ") {
		if err := ipCmd("addr", "add", addr, "dev", n.Bridge); err != nil {
			return created, err
		}
	}
	return created, ipCmd("link", "set", n.Bridge, "up")
}

func (n *Network) DeleteBridge() error { return ipCmd("link", "del", n.Bridge) }

// Setup creates the pod's namespace and veth pair and addresses eth0.
func (n *Network) Setup(uid string, ip net.IP) (PodNet, error) {
	pn := PodNet{NetNS: netnsName(uid), HostVeth: hostVethName(uid), IP: ip.String()}
	peer := peerVethName(uid)
	ones, _ := n.PodCIDR.Mask.Size()
	steps := [][]string{
		{"netns", "add", pn.NetNS},
		{"link", "add", pn.HostVeth, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", pn.NetNS},
		{"link", "set", pn.HostVeth, "master", n.Bridge},
		// hairpin: a pod reaching itself through a service IP comes back the same port
		{"link", "set", pn.HostVeth, "type", "bridge_slave", "hairpin", "on"},
		{"link", "set", pn.HostVeth, "up"},
		{"-n", pn.NetNS, "link", "set", "lo", "up"},
		{"-n", pn.NetNS, "link", "set", peer, "name", "eth0"},
		{"-n", pn.NetNS, "addr", "add", fmt.Sprintf("%s/%d", ip, ones), "dev", "eth0"},
		{"-n", pn.NetNS, "link", "set", "eth0", "up"},
		{"-n", pn.NetNS, "route", "add", n.ClusterCIDR.String(), "via", n.Alloc.Gateway().String(), "dev", "eth0"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			n.Teardown(pn)
			return PodNet{}, err
		}
	}
	return pn, nil
}

// safeNetSysctls are the kubelet's safe sysctls that belong to a network namespace (the
// gateway's pods set net.ipv4.ip_unprivileged_port_start to bind port 80 unprivileged).
var safeNetSysctls = map[string]bool{
	"net.ipv4.ip_local_port_range": true, "net.ipv4.tcp_syncookies": true, "net.ipv4.ping_group_range": true,
	"net.ipv4.ip_unprivileged_port_start": true, "net.ipv4.ip_local_reserved_ports": true,
	"net.ipv4.tcp_keepalive_time": true, "net.ipv4.tcp_fin_timeout": true, "net.ipv4.tcp_keepalive_intvl": true,
	"net.ipv4.tcp_keepalive_probes": true, "net.ipv4.tcp_rmem": true, "net.ipv4.tcp_wmem": true,
}

// ApplySysctls sets a pod's sysctls in its network namespace; any other is refused, as
// the kubelet refuses unsafe ones it was not told to allow.
func (n *Network) ApplySysctls(netns string, sysctls []corev1.Sysctl) error {
	for _, sc := range sysctls {
		if !safeNetSysctls[sc.Name] {
			return fmt.Errorf("sysctl %s is not supported by sms-node (only the kubelet's safe net.* sysctls)", sc.Name)
		}
		out, err := exec.Command("ip", "netns", "exec", netns, "sysctl", "-q", "-w", sc.Name+"="+sc.Value).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sysctl %s=%s: %v: %s", sc.Name, sc.Value, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Teardown removes the namespace (which takes the veth pair with it) and the host end
// if it somehow survived. Errors for things already gone are ignored.
func (n *Network) Teardown(pn PodNet) {
	if pn.NetNS != "" && netnsExists(pn.NetNS) {
		_ = ipCmd("netns", "del", pn.NetNS)
	}
	if pn.HostVeth != "" && linkExists(pn.HostVeth) {
		_ = ipCmd("link", "del", pn.HostVeth)
	}
}

func netnsExists(name string) bool {
	for _, n := range listNetns() {
		if n == name {
			return true
		}
	}
	return false
}

func listNetns() []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func listLinks() []string {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		if i := strings.Index(name, "@"); i >= 0 {
			name = name[:i]
		}
		names = append(names, name)
	}
	return names
}
