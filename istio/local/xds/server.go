package main

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshapi "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
)

type configT = config.Config

type server struct {
	fake  *xds.FakeDiscoveryServer
	debug http.Handler
}

// parse reads the Istio objects of a multi-document YAML with Istio's own decoder and
// validation (the one `kubectl apply` meets through the webhook); other kinds are skipped.
func parse(text string) ([]configT, error) {
	cfgs, _, err := crd.ParseInputs(text)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i := range cfgs {
		if cfgs[i].Namespace == "" {
			return nil, fmt.Errorf("%s: metadata.namespace is required", key(cfgs[i]))
		}
		// as the Kubernetes config store does: short hosts ("sms-app-model") resolve to
		// <name>.<namespace>.svc.cluster.local
		cfgs[i].Domain = "cluster.local"
		if seen[key(cfgs[i])] {
			return nil, fmt.Errorf("%s: defined twice", key(cfgs[i]))
		}
		seen[key(cfgs[i])] = true
	}
	return cfgs, nil
}

func key(c configT) string {
	return fmt.Sprintf("%s %s/%s", c.GroupVersionKind.Kind, c.Namespace, c.Name)
}

// meshConfig: Istio's defaults without tracing and telemetry providers (their Envoy
// extensions are Istio builds' or need collectors that do not run here).
func meshConfig() *meshapi.MeshConfig {
	m := mesh.DefaultMeshConfig()
	m.EnableTracing = false
	m.ExtensionProviders = nil
	m.DefaultConfig.Tracing = nil
	// the local processes speak plaintext, as pods without a sidecar: no automatic mTLS
	// (it would need SDS certificates from istio-agent)
	m.EnableAutoMtls = wrapperspb.Bool(false)
	return m
}

func newServer(t *runner, lis net.Listener, cfgs []configT) *server {
	fake := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		Configs:         cfgs,
		MeshConfig:      meshConfig(),
		ListenerBuilder: func() (net.Listener, error) { return lis, nil },
		// as istiod's default PILOT_DEBOUNCE_AFTER: a burst of changes becomes one push
		DebounceTime: 100 * time.Millisecond,
	})
	return &server{fake: fake, debug: fake.DiscoveryDebug}
}

// apply makes the store hold exactly cfgs, then waits until Istio has computed the new
// push context and started pushing it to every connected proxy.
func (s *server) apply(cfgs []configT) (summary, error) {
	start := time.Now()
	store := s.fake.Store()
	var sum summary
	want := map[string]configT{}
	for _, c := range cfgs {
		want[key(c)] = c
	}
	before := s.fake.Discovery.InboundUpdates.Load()
	// deletions first, so a rename never holds two objects for the same host
	for _, sch := range store.Schemas().All() {
		for _, old := range store.List(sch.GroupVersionKind(), "") {
			if _, keep := want[key(old)]; !keep {
				if err := store.Delete(old.GroupVersionKind, old.Name, old.Namespace, nil); err != nil {
					return sum, fmt.Errorf("delete %s: %v", key(old), err)
				}
				sum.Deleted = append(sum.Deleted, key(old))
			}
		}
	}
	for _, c := range cfgs {
		old := store.Get(c.GroupVersionKind, c.Name, c.Namespace)
		switch {
		case old == nil:
			if _, err := store.Create(c); err != nil {
				return sum, fmt.Errorf("create %s: %v", key(c), err)
			}
			sum.Created = append(sum.Created, key(c))
		case proto.Equal(old.Spec.(proto.Message), c.Spec.(proto.Message)) && sameLabels(old.Labels, c.Labels):
			sum.Unchanged++
		default:
			c.ResourceVersion = old.ResourceVersion
			if _, err := store.Update(c); err != nil {
				return sum, fmt.Errorf("update %s: %v", key(c), err)
			}
			sum.Updated = append(sum.Updated, key(c))
		}
	}
	if len(sum.Created)+len(sum.Updated)+len(sum.Deleted) > 0 {
		if err := s.waitPushed(before); err != nil {
			return sum, err
		}
	}
	sum.PushMs = time.Since(start).Milliseconds()
	return sum, nil
}

// waitPushed: until every config event since `before` is in a committed push context and
// every connected proxy has been sent that push and acknowledged (applied) what it got.
// Istio sends each type only when the change concerns it, so "acknowledged" is: for every
// watched type the last nonce sent is the last nonce acked, checked twice in a row.
func (s *server) waitPushed(before int64) error {
	d := s.fake.Discovery
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		in := d.InboundUpdates.Load()
		if in > before && d.CommittedUpdates.Load() >= in {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	push := d.Env.PushContext()
	synced := 0
	for time.Now().Before(deadline) {
		if s.allAcked(push) {
			synced++
			if synced == 2 {
				return nil
			}
		} else {
			synced = 0
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the proxies did not acknowledge the push within 30 s: %s", s.stale())
}

func (s *server) allAcked(push *model.PushContext) bool {
	for _, c := range s.fake.Discovery.AllClients() {
		p := c.Proxy()
		if p.LastPushContext != push {
			return false
		}
		for _, w := range p.DeepCloneWatchedResources() {
			if w.NonceSent != w.NonceAcked {
				return false
			}
		}
	}
	return true
}

// stale names the proxies and types still waiting, for the error message.
func (s *server) stale() string {
	var out []string
	for _, c := range s.fake.Discovery.AllClients() {
		for t, w := range c.Proxy().DeepCloneWatchedResources() {
			if w.NonceSent != w.NonceAcked {
				out = append(out, c.Proxy().ID+" "+t)
			}
		}
	}
	return fmt.Sprint(out)
}

// proxies: the IDs of the connected proxies (for /ready and the logs).
func (s *server) proxies() []string {
	var out []string
	for _, c := range s.fake.Discovery.AllClients() {
		out = append(out, fmt.Sprintf("%s~%s~%s", c.Proxy().Type, c.Proxy().ID, c.Proxy().ConfigNamespace))
	}
	sort.Strings(out)
	return out
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
