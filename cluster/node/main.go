// sms-node is the node of the local cluster: a virtual-kubelet whose pods really run,
// each container a local process in the pod's own network namespace.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const kubeletVersion = "v1.36.1-sms-node"

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) > 2 && os.Args[1] == "container-init" {
		containerInit(os.Args[2])
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sms-node:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kubeconfig  = flag.String("kubeconfig", "", "node credentials (client cert CN system:node:<name>, O system:nodes)")
		name        = flag.String("name", "sms-node", "node name")
		nodeIP      = flag.String("node-ip", "127.0.0.1", "InternalIP and the kubelet API address")
		listen      = flag.String("listen", "127.0.0.1:10250", "kubelet API (TLS) address")
		tlsCert     = flag.String("tls-cert", "", "kubelet API server certificate")
		tlsKey      = flag.String("tls-key", "", "kubelet API server key")
		clientCA    = flag.String("client-ca", "", "CA of the client certificates the kubelet API requires (the API server's kubelet client)")
		stateDir    = flag.String("state-dir", "", "per-pod files and state.json")
		images      = flag.String("images", "", "JSON image table: repository -> {entrypoint, cmd, env}")
		bridge      = flag.String("bridge", "smsbr0", "bridge the pods are attached to")
		podCIDR     = flag.String("pod-cidr", "198.18.0.0/24", "pod addresses; the bridge gets the first")
		clusterCIDR = flag.String("cluster-cidr", "198.18.0.0/15", "the only route pods get, via the bridge")
		dnsServer   = flag.String("dns-server", "198.19.0.10", "nameserver in pods' resolv.conf")
		domain      = flag.String("cluster-domain", "cluster.local", "cluster DNS domain")
		apiService  = flag.String("api-service", "", "HOST:PORT of the `kubernetes` Service, given to containers as KUBERNETES_SERVICE_HOST/PORT (in-cluster clients need it)")
		hostPaths   multiFlag
	)
	flag.Var(&hostPaths, "host-path", "SRC=DST: hostPath volume path SRC is the local folder DST (repeatable)")
	flag.Parse()

	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (network namespaces, mounts)")
	}
	for _, f := range []struct{ name, v string }{{"kubeconfig", *kubeconfig}, {"state-dir", *stateDir}, {"tls-cert", *tlsCert}, {"tls-key", *tlsKey}, {"client-ca", *clientCA}} {
		if f.v == "" {
			return fmt.Errorf("--%s is required", f.name)
		}
	}
	hp := hostPathMap{}
	for _, s := range hostPaths {
		src, dst, ok := strings.Cut(s, "=")
		if !ok || !filepath.IsAbs(src) || dst == "" {
			return fmt.Errorf("--host-path %q: want /chart/path=/local/folder", s)
		}
		abs, err := filepath.Abs(dst)
		if err != nil {
			return err
		}
		hp[src] = abs
	}
	_, pcidr, err := net.ParseCIDR(*podCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr: %w", err)
	}
	_, ccidr, err := net.ParseCIDR(*clusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	alloc, err := NewIPAllocator(pcidr)
	if err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(*listen); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if *images != "" {
		if _, err := loadImageTable(*images); err != nil {
			return err
		}
	}
	*stateDir, _ = filepath.Abs(*stateDir)
	if err := os.MkdirAll(*stateDir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	// virtual-kubelet logs nothing until given a logger.
	log.L = vkslog.FromSlog(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := log.G(ctx)

	nw := &Network{Bridge: *bridge, PodCIDR: pcidr, ClusterCIDR: ccidr, Alloc: alloc}
	plan, err := cleanupPrevious(*stateDir, nw)
	if err != nil {
		logger.Warnf("state.json unreadable, nothing cleaned: %v", err)
	} else if !plan.Empty() {
		logger.Infof("cleaned up after a previous sms-node: %s", plan)
	}
	created, err := nw.EnsureBridge()
	if err != nil {
		return fmt.Errorf("bridge %s: %w", *bridge, err)
	}
	st := &stateFile{path: filepath.Join(*stateDir, "state.json"), st: NodeState{Bridge: *bridge, BridgeCreated: created, Pods: map[string]PodNet{}}}
	if err := st.save(); err != nil {
		return err
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "1" {
		logger.Warn("net.ipv4.ip_forward is 0: pods reach each other, but not service IPs that route back through the node")
	}
	teardown := func() {
		if created {
			_ = nw.DeleteBridge()
		}
		_ = st.update(func(s *NodeState) { s.BridgeCreated = false; s.Pods = map[string]PodNet{} })
	}

	restCfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		teardown()
		return fmt.Errorf("kubeconfig: %w", err)
	}
	restCfg.UserAgent = "sms-node/" + kubeletVersion
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		teardown()
		return err
	}

	cfg := Config{NodeName: *name, NodeIP: *nodeIP, StateDir: *stateDir, ImagesPath: *images, HostPaths: hp,
		DNSServer: *dnsServer, ClusterDomain: *domain, APIService: *apiService, CPUs: runtime.NumCPU(), MemoryBytes: memTotal(), Net: nw}
	var prov *Provider
	mux := http.NewServeMux()
	nd, err := nodeutil.NewNode(*name, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		prov = &Provider{cfg: cfg, selfExe: self, client: client, podLister: pc.Pods, cmLister: pc.ConfigMaps,
			secretLister: pc.Secrets, state: st, pods: map[string]*podRT{}}
		fillNode(pc.Node, cfg, *listen)
		return prov, nil, nil
	},
		nodeutil.WithClient(client),
		nodeutil.AttachProviderRoutes(mux),
		nodeutil.WithTLSConfig(nodeutil.WithKeyPairFromPath(*tlsCert, *tlsKey), nodeutil.WithCAFromPath(*clientCA)),
		func(c *nodeutil.NodeConfig) error {
			c.HTTPListenAddr = *listen
			c.Handler = mux // the verified client certificate is the authentication
			c.NumWorkers = 4
			c.SkipDownwardAPIResolution = true // see env.go
			return nil
		},
	)
	if err != nil {
		teardown()
		return err
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	runErr := make(chan error, 1)
	go func() { runErr <- nd.Run(ctx) }()
	go func() {
		if err := nd.WaitReady(ctx, 0); err == nil {
			logger.Infof("node %s ready: kubelet API on %s, pods on %s (%s)", *name, *listen, *bridge, pcidr)
		}
	}()
	var exitErr error
	select {
	case s := <-sigs:
		logger.Infof("%s: stopping all pods", s)
	case exitErr = <-runErr:
		logger.Errorf("node controller stopped: %v", exitErr)
	}
	signal.Stop(sigs)
	if prov != nil {
		prov.shutdown(30 * time.Second)
	}
	cancel()
	select {
	case <-runErr:
	case <-time.After(5 * time.Second):
	}
	teardown()
	logger.Info("stopped")
	return exitErr
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// fillNode describes the node: capacity from this machine, addresses, the kubelet
// port, and labels a NodeRestriction admission accepts from a node.
func fillNode(n *corev1.Node, cfg Config, listen string) {
	_, portS, _ := net.SplitHostPort(listen)
	port, _ := strconv.Atoi(portS)
	hostname, _ := os.Hostname()
	n.Labels = map[string]string{
		"type":                   "virtual-kubelet",
		"kubernetes.io/hostname": cfg.NodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(cfg.CPUs), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(cfg.MemoryBytes, resource.BinarySI),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
	}
	n.Status.Capacity = res
	n.Status.Allocatable = res.DeepCopy()
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: cfg.NodeIP}, {Type: corev1.NodeHostName, Address: hostname}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
	n.Status.NodeInfo = corev1.NodeSystemInfo{KubeletVersion: kubeletVersion, OperatingSystem: "linux", Architecture: runtime.GOARCH,
		ContainerRuntimeVersion: "sms-node://processes", KernelVersion: kernelVersion()}
	now := metav1.Now()
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "Starting", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "RouteCreated", LastHeartbeatTime: now, LastTransitionTime: now},
	}
	n.Spec.PodCIDR = cfg.Net.PodCIDR.String()
	n.Spec.PodCIDRs = []string{cfg.Net.PodCIDR.String()}
}

func kernelVersion() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
