package main

import (
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestImageRepository(t *testing.T) {
	for in, want := range map[string]string{
		"sms-app/model-service:1.2.3":             "sms-app/model-service",
		"docker.io/istio/proxyv2:1.29.0":          "docker.io/istio/proxyv2",
		"localhost:5000/sms-app/app":              "localhost:5000/sms-app/app",
		"localhost:5000/sms-app/app:v1":           "localhost:5000/sms-app/app",
		"busybox@sha256:abcd":                     "busybox",
		"ghcr.io/x/y:tag@sha256:0123456789abcdef": "ghcr.io/x/y",
	} {
		if got := imageRepository(in); got != want {
			t.Errorf("imageRepository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLookupImageAliases(t *testing.T) {
	table := map[string]ImageEntry{
		"docker.io/istio/proxyv2": {Entrypoint: []string{"/bin/envoy-wrapper"}},
		"sms-app/model-service":   {Entrypoint: []string{"/bin/model"}},
		"busybox":                 {Entrypoint: []string{"/bin/busybox"}},
	}
	for img, want := range map[string]string{
		"istio/proxyv2:1.2":                   "docker.io/istio/proxyv2",
		"docker.io/istio/proxyv2:1.2":         "docker.io/istio/proxyv2",
		"sms-app/model-service:dev":           "sms-app/model-service",
		"docker.io/library/busybox:1.36":      "busybox",
		"docker.io/sms-app/model-service:dev": "sms-app/model-service",
	} {
		if _, name, ok := lookupImage(table, img); !ok || name != want {
			t.Errorf("lookupImage(%q) = %q %v, want %q", img, name, ok, want)
		}
	}
	if _, repo, ok := lookupImage(table, "quay.io/other:1"); ok || repo != "quay.io/other" {
		t.Errorf("unknown image resolved: %q %v", repo, ok)
	}
}

func TestResolveArgv(t *testing.T) {
	e := ImageEntry{Entrypoint: []string{"/ep", "-x"}, Cmd: []string{"c1", "c2"}}
	cases := []struct {
		cmd, args, want []string
	}{
		{nil, nil, []string{"/ep", "-x", "c1", "c2"}},
		{nil, []string{"a"}, []string{"/ep", "-x", "a"}},
		{[]string{"/bin/sh"}, nil, []string{"/bin/sh"}}, // command drops CMD too
		{[]string{"/bin/sh"}, []string{"-c", "x"}, []string{"/bin/sh", "-c", "x"}},
	}
	for _, c := range cases {
		got, err := resolveArgv(e, c.cmd, c.args)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("resolveArgv(%v,%v) = %v %v, want %v", c.cmd, c.args, got, err, c.want)
		}
	}
	if _, err := resolveArgv(ImageEntry{}, nil, nil); err == nil {
		t.Error("empty argv accepted")
	}
}

func TestContainerEnv(t *testing.T) {
	env := containerEnv(ImageEntry{Env: map[string]string{"A": "image", "B": "image"}}, map[string]string{"B": "pod"}, "p1", 65532)
	want := map[string]string{"A": "image", "B": "pod", "HOME": "/", "HOSTNAME": "p1"}
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	if got["PATH"] == "" {
		t.Error("no default PATH")
	}
}

func TestBackoffSchedule(t *testing.T) {
	b := newBackoff()
	var got []time.Duration
	for i := 0; i < 8; i++ {
		got = append(got, b.Next(time.Second))
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("schedule %v, want %v", got, want)
	}
	if d := b.Next(10 * time.Minute); d != 0 {
		t.Errorf("after 10 min running: %v, want immediate restart", d)
	}
	if d := b.Next(time.Second); d != 10*time.Second {
		t.Errorf("after reset: %v, want 10s", d)
	}
}

func TestResolvConfAndHosts(t *testing.T) {
	got := resolvConf("sms", "cluster.local", "198.19.0.10")
	want := "search sms.svc.cluster.local svc.cluster.local cluster.local\nnameserver 198.19.0.10\noptions ndots:5\n"
	if got != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	h := hostsFile("model-abc", "", "", "sms", "cluster.local", "198.18.0.7")
	if !strings.Contains(h, "127.0.0.1\tlocalhost\n") || !strings.Contains(h, "198.18.0.7\tmodel-abc\n") {
		t.Errorf("hosts:\n%s", h)
	}
	h = hostsFile("web-0", "web-0", "web", "sms", "cluster.local", "198.18.0.8")
	if !strings.Contains(h, "198.18.0.8\tweb-0.web.sms.svc.cluster.local\tweb-0\n") {
		t.Errorf("hosts with subdomain:\n%s", h)
	}
}

func TestProbeCounter(t *testing.T) {
	// readiness: starts failed, needs successThreshold successes, failureThreshold failures
	c := &probeCounter{params: probeParams{success: 2, failure: 3}}
	steps := []struct {
		ok, res, changed bool
	}{
		{true, false, false}, {true, true, true}, {true, true, false},
		{false, true, false}, {false, true, false}, {true, true, false}, // a success resets the failure run
		{false, true, false}, {false, true, false}, {false, false, true},
	}
	for i, s := range steps {
		res, ch := c.observe(s.ok)
		if res != s.res || ch != s.changed {
			t.Fatalf("step %d observe(%v) = %v,%v want %v,%v", i, s.ok, res, ch, s.res, s.changed)
		}
	}
	// startup: starts failed; failureThreshold failures in a row is reported once
	c = &probeCounter{params: probeParams{success: 1, failure: 2}}
	if _, ch := c.observe(false); ch {
		t.Fatal("one failure reported")
	}
	if res, ch := c.observe(false); res || !ch {
		t.Fatal("failure threshold not reported")
	}
	p := probeParamsOf(&corev1.Probe{})
	if p.period != 10*time.Second || p.timeout != time.Second || p.success != 1 || p.failure != 3 {
		t.Errorf("defaults %+v", p)
	}
}

func TestIPAllocator(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("198.18.0.0/29") // .1 bridge, .2-.6 pods, .7 broadcast
	a, err := NewIPAllocator(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if a.Gateway().String() != "198.18.0.1" {
		t.Fatalf("gateway %s", a.Gateway())
	}
	var got []string
	for i := 0; i < 5; i++ {
		ip, err := a.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip.String())
	}
	if strings.Join(got, " ") != "198.18.0.2 198.18.0.3 198.18.0.4 198.18.0.5 198.18.0.6" {
		t.Fatalf("allocated %v", got)
	}
	if _, err := a.Allocate(); err == nil {
		t.Fatal("allocated beyond the range")
	}
	a.Release(net.ParseIP("198.18.0.3"))
	if ip, _ := a.Allocate(); ip.String() != "198.18.0.3" {
		t.Fatalf("after release got %s", ip)
	}
	// Round robin: a released address is not the next one handed out while others are free.
	_, cidr, _ = net.ParseCIDR("198.18.0.0/24")
	a, _ = NewIPAllocator(cidr)
	ip1, _ := a.Allocate()
	a.Release(ip1)
	if ip2, _ := a.Allocate(); ip2.Equal(ip1) {
		t.Fatal("released address reused at once")
	}
	if hostVethName("0f6e2d1c-aaaa-bbbb-cccc-1234567890ab") != "vsms0f6e2d1caa" || len(netnsName("0f6e2d1c-aaaa")) > 16 {
		t.Error("names")
	}
}

func TestPlanCleanup(t *testing.T) {
	st := NodeState{Bridge: "smsbr0", BridgeCreated: true, Pods: map[string]PodNet{
		"u1": {NetNS: "sms-u1", HostVeth: "vsmsu1"},
		"u2": {NetNS: "sms-u2", HostVeth: "vsmsu2"},
	}}
	p := planCleanup(st, []string{"sms-u1", "other"}, []string{"lo", "eth0", "vsmsu1", "vsmsu2", "smsbr0"})
	if !reflect.DeepEqual(p.NetNS, []string{"sms-u1"}) || !reflect.DeepEqual(p.Links, []string{"vsmsu1", "vsmsu2"}) || p.Bridge != "smsbr0" {
		t.Fatalf("plan %+v", p)
	}
	st.BridgeCreated = false // a bridge someone else made is left alone
	if p := planCleanup(st, nil, []string{"smsbr0"}); !p.Empty() {
		t.Fatalf("plan %+v", p)
	}
}

func TestPodPhase(t *testing.T) {
	run := ctrSnap{Running: true}
	ok := ctrSnap{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}
	bad := ctrSnap{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}
	crash := ctrSnap{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}, LastTerm: &corev1.ContainerStateTerminated{ExitCode: 1}}
	creating := ctrSnap{}
	cases := []struct {
		policy         corev1.RestartPolicy
		initDone, fail bool
		ctrs           []ctrSnap
		want           corev1.PodPhase
	}{
		{corev1.RestartPolicyAlways, false, false, []ctrSnap{creating}, corev1.PodPending},
		{corev1.RestartPolicyNever, false, true, []ctrSnap{creating}, corev1.PodFailed},
		{corev1.RestartPolicyAlways, true, false, []ctrSnap{run, creating}, corev1.PodPending},
		{corev1.RestartPolicyAlways, true, false, []ctrSnap{run, crash}, corev1.PodRunning},
		{corev1.RestartPolicyAlways, true, false, []ctrSnap{crash}, corev1.PodRunning},
		{corev1.RestartPolicyNever, true, false, []ctrSnap{ok, ok}, corev1.PodSucceeded},
		{corev1.RestartPolicyNever, true, false, []ctrSnap{ok, bad}, corev1.PodFailed},
		{corev1.RestartPolicyOnFailure, true, false, []ctrSnap{ok, crash}, corev1.PodRunning},
		{corev1.RestartPolicyOnFailure, true, false, []ctrSnap{ok}, corev1.PodSucceeded},
	}
	for i, c := range cases {
		if got := podPhase(c.policy, c.initDone, c.fail, c.ctrs); got != c.want {
			t.Errorf("case %d: %s, want %s", i, got, c.want)
		}
	}
	st := buildPodStatus(podSnap{Policy: corev1.RestartPolicyAlways, InitDone: true, PodIP: "198.18.0.2", HostIP: "127.0.0.1",
		Ctrs: []ctrSnap{{Name: "a", Running: true, Ready: true}, {Name: "b", Running: true}}})
	cond := map[corev1.PodConditionType]corev1.ConditionStatus{}
	for _, c := range st.Conditions {
		cond[c.Type] = c.Status
	}
	if cond[corev1.PodReady] != corev1.ConditionFalse || cond[corev1.PodInitialized] != corev1.ConditionTrue {
		t.Errorf("conditions %v", cond)
	}
	if st.PodIPs[0].IP != "198.18.0.2" || st.ContainerStatuses[0].State.Running == nil {
		t.Errorf("status %+v", st)
	}
}

func TestResourceFieldValue(t *testing.T) {
	res := corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi"), corev1.ResourceCPU: resource.MustParse("1500m")}}
	for ref, want := range map[corev1.ResourceFieldSelector]string{
		{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}: "512",
		{Resource: "limits.cpu"}:                                    "2",
		{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}: "1500",
		{Resource: "requests.memory"}:                               "536870912", // request defaults to the limit
	} {
		got, err := resourceFieldValue(&ref, res, 4, 8<<30)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", ref.Resource, got, err, want)
		}
	}
	// No limit: the node's capacity.
	got, _ := resourceFieldValue(&corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}, corev1.ResourceRequirements{}, 4, 8<<30)
	if got != "8192" {
		t.Errorf("node memory: %s", got)
	}
}

func TestHostPathMap(t *testing.T) {
	m := hostPathMap{"/mnt/shared/models": "/srv/models", "/mnt/shared": "/srv/shared"}
	for in, want := range map[string]string{
		"/mnt/shared/models":     "/srv/models",
		"/mnt/shared/models/v1/": "/srv/models/v1",
		"/mnt/shared/other":      "/srv/shared/other",
	} {
		if got, ok := m.resolve(in); !ok || got != want {
			t.Errorf("resolve(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
	if _, ok := m.resolve("/mnt/sharedx"); ok {
		t.Error("prefix without a slash matched")
	}
}

func TestSelectLogLines(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lines := []string{
		now.Add(-3*time.Minute).Format(time.RFC3339Nano) + " stdout one",
		now.Add(-2*time.Minute).Format(time.RFC3339Nano) + " stderr two",
		now.Add(-1*time.Minute).Format(time.RFC3339Nano) + " stdout three four",
	}
	texts := func(rs []logRecord) string {
		var s []string
		for _, r := range rs {
			s = append(s, r.text)
		}
		return strings.Join(s, "|")
	}
	if got := texts(selectLogLines(lines, api.ContainerLogOpts{}, now)); got != "one|two|three four" {
		t.Error(got)
	}
	if got := texts(selectLogLines(lines, api.ContainerLogOpts{Tail: 2}, now)); got != "two|three four" {
		t.Error(got)
	}
	if got := texts(selectLogLines(lines, api.ContainerLogOpts{SinceSeconds: 150}, now)); got != "two|three four" {
		t.Error(got)
	}
	r := selectLogLines(lines[:1], api.ContainerLogOpts{}, now)[0]
	if formatRecord(r, true) != lines[0][:strings.Index(lines[0], " ")]+" one\n" {
		t.Errorf("timestamps: %q", formatRecord(r, true))
	}
}

func TestPlanMounts(t *testing.T) {
	mounts, overlays, newTops, err := planMounts([]MountSpec{
		{Src: "/s2", Dst: "/etc/sms-node-test-missing/sub"},
		{Src: "/s1", Dst: "/etc/resolv.conf"},
		{Src: "/s3", Dst: "/tmp"},
		{Src: "/s4", Dst: "/sms-node-no-such-top/x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(newTops, []string{"/sms-node-no-such-top"}) {
		t.Errorf("new tops %v", newTops)
	}
	if !reflect.DeepEqual(overlays, []string{"/etc"}) {
		t.Errorf("overlays %v", overlays)
	}
	if mounts[0].Dst != "/tmp" {
		t.Errorf("order %v", mounts)
	}
	if _, _, _, err := planMounts([]MountSpec{{Src: "/s", Dst: "/etc/hostname/x"}}); err == nil {
		t.Error("a mount below a file accepted")
	}
}

func TestExpandEnv(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y"}
	for in, want := range map[string]string{"$(A)-$(B)": "x-y", "$$(A)": "$(A)", "$(C)": "$(C)", "a$": "a$", "$(A": "$(A"} {
		if got := expandEnv(in, vars); got != want {
			t.Errorf("expandEnv(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAPIServiceEnvIsWhatTheKubeletGives(t *testing.T) {
	env := apiServiceEnv("198.19.0.1:443")
	want := map[string]string{
		"KUBERNETES_SERVICE_HOST": "198.19.0.1", "KUBERNETES_SERVICE_PORT": "443",
		"KUBERNETES_PORT": "tcp://198.19.0.1:443", "KUBERNETES_PORT_443_TCP_ADDR": "198.19.0.1",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if len(apiServiceEnv("")) != 0 {
		t.Errorf("no --api-service must give no KUBERNETES_* variables")
	}
}

func TestCommandAndArgsExpandTheContainersEnv(t *testing.T) {
	env := map[string]string{"POD_NAMESPACE": "sms-app"}
	got := expandAll([]string{"--domain", "$(POD_NAMESPACE).svc.cluster.local", "$$(KEPT)", "$(UNKNOWN)"}, env)
	want := []string{"--domain", "sms-app.svc.cluster.local", "$(KEPT)", "$(UNKNOWN)"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("expandAll = %v, want %v", got, want)
	}
	if expandAll(nil, env) != nil {
		t.Errorf("no args must stay no args (the image's CMD applies)")
	}
}

func TestTheImagesWorkdirAppliesUnlessTheContainerSetsOne(t *testing.T) {
	e := ImageEntry{WorkDir: "/home/flagger"}
	if got := workDir(e, ""); got != "/home/flagger" {
		t.Errorf("workDir = %q, want the image's", got)
	}
	if got := workDir(e, "/srv"); got != "/srv" {
		t.Errorf("workDir = %q, want the container's", got)
	}
}
