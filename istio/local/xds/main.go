// istio-xds: Istio's own control plane code (the pilot config generator and its ADS
// server, from istio.io/istio's pilot/test/xds package) serving real Envoys over plaintext
// gRPC on 127.0.0.1, with no Kubernetes: the configuration is read from YAML files (the
// rendered chart plus the local overlay, see tooling/smsdev/mesh/overlay.py) into Istio's
// in-memory config store. Non-Istio kinds in the files are ignored.
//
//	istio-xds -xds 127.0.0.1:15010 -control 127.0.0.1:15014 -config FILE
//
// Control API (127.0.0.1 only):
//
//	GET  /ready           200 once the first push is done
//	POST /apply           re-read -config, create/update/delete what changed (Istio's own
//	                      validation refuses a bad object: 400 and nothing applied), then
//	                      wait until the push is sent; 200 with a summary
//	GET  /proxies         the connected proxies (JSON); 200 when all have acknowledged
//	                      the current configuration, 503 while one has not
//	GET  /debug/...       istiod's debug handlers (configz, syncz, adsz, ...)
//
// Istio-only Envoy extensions (ALPN override, metadata exchange) are switched off through
// istiod's own feature flags, which it reads from the environment at start-up: this
// program sets them and re-executes itself before Istio's packages initialise.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"
)

// The flags istiod reads at package initialisation; the values stock Envoy can run.
var istioEnv = map[string]string{
	"PILOT_ENABLE_ALPN_FILTER":       "false",
	"PILOT_ENABLE_METADATA_EXCHANGE": "false",
	// no Kubernetes Gateway API / ambient in this mesh: fewer controllers to run
	"PILOT_ENABLE_GATEWAY_API":                       "false",
	"PILOT_ENABLE_GATEWAY_API_STATUS":                "false",
	"PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER": "false",
	"PILOT_ENABLE_AMBIENT":                           "false",
}

func main() {
	if os.Getenv("ISTIO_XDS_CHILD") == "" {
		reexec()
	}
	xdsAddr := flag.String("xds", "127.0.0.1:15010", "ADS gRPC listen address")
	controlAddr := flag.String("control", "127.0.0.1:15014", "control/debug HTTP listen address")
	configPath := flag.String("config", "", "multi-document YAML: Istio objects (other kinds ignored)")
	flag.Parse()
	if *configPath == "" {
		log.Fatal("istio-xds: -config is required")
	}
	text, err := os.ReadFile(*configPath)
	if err != nil {
		log.Fatalf("istio-xds: %v", err)
	}
	cfgs, err := parse(string(text))
	if err != nil {
		log.Fatalf("istio-xds: %s: %v", *configPath, err)
	}
	xdsLis, err := net.Listen("tcp", *xdsAddr)
	if err != nil {
		log.Fatalf("istio-xds: ADS listener: %v", err)
	}
	controlLis, err := net.Listen("tcp", *controlAddr)
	if err != nil {
		log.Fatalf("istio-xds: control listener: %v", err)
	}

	t := &runner{}
	start := time.Now()
	srv := newServer(t, xdsLis, cfgs)
	log.Printf("istio-xds: ADS on %s, %d Istio objects from %s, first push in %v",
		xdsLis.Addr(), len(cfgs), *configPath, time.Since(start).Round(time.Millisecond))

	var mu sync.Mutex // one apply at a time
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ready") })
	mux.HandleFunc("/proxies", func(w http.ResponseWriter, r *http.Request) {
		// the connected proxies; 200 when each has acknowledged the current push, else 503
		synced := srv.allAcked(srv.fake.Discovery.Env.PushContext())
		w.Header().Set("content-type", "application/json")
		if !synced {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"synced": synced, "proxies": srv.proxies()})
	})
	mux.HandleFunc("/apply", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		text, err := os.ReadFile(*configPath)
		if err == nil {
			var cfgs []configT
			if cfgs, err = parse(string(text)); err == nil {
				var sum summary
				if sum, err = srv.apply(cfgs); err == nil {
					log.Printf("istio-xds: applied %s", sum)
					w.Header().Set("content-type", "application/json")
					_ = json.NewEncoder(w).Encode(sum)
					return
				}
			}
		}
		log.Printf("istio-xds: apply refused: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
	})
	mux.Handle("/debug/", srv.debug)
	go func() {
		if err := http.Serve(controlLis, mux); err != nil {
			log.Fatalf("istio-xds: control server: %v", err)
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	t.cleanup()
}

func reexec() {
	env := os.Environ()
	for k, v := range istioEnv {
		if _, set := os.LookupEnv(k); !set {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, "ISTIO_XDS_CHILD=1")
	self, err := os.Executable()
	if err != nil {
		log.Fatalf("istio-xds: %v", err)
	}
	if err := syscall.Exec(self, os.Args, env); err != nil {
		log.Fatalf("istio-xds: re-exec: %v", err)
	}
}

// summary of one apply, by "Kind namespace/name".
type summary struct {
	Created   []string `json:"created"`
	Updated   []string `json:"updated"`
	Deleted   []string `json:"deleted"`
	Unchanged int      `json:"unchanged"`
	PushMs    int64    `json:"push_ms"`
}

func (s summary) String() string {
	for _, l := range [][]string{s.Created, s.Updated, s.Deleted} {
		sort.Strings(l)
	}
	return fmt.Sprintf("created %v updated %v deleted %v unchanged %d, pushed in %d ms",
		s.Created, s.Updated, s.Deleted, s.Unchanged, s.PushMs)
}

// runner stands in for the testing.T that Istio's fake server expects: a failure is fatal
// to the program, clean-ups run at exit.
type runner struct {
	mu       sync.Mutex
	cleanups []func()
}

func (r *runner) Fail()                             { log.Fatal("istio-xds: failed") }
func (r *runner) FailNow()                          { r.Fail() }
func (r *runner) Fatal(args ...any)                 { log.Fatal(append([]any{"istio-xds: "}, args...)...) }
func (r *runner) Fatalf(format string, args ...any) { log.Fatalf("istio-xds: "+format, args...) }
func (r *runner) Log(args ...any)                   { log.Print(args...) }
func (r *runner) Logf(format string, args ...any)   { log.Printf(format, args...) }
func (r *runner) Helper()                           {}
func (r *runner) Skip(args ...any)                  { r.Fatal(args...) }
func (r *runner) TempDir() string {
	d, err := os.MkdirTemp("", "istio-xds")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *runner) cleanup() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
