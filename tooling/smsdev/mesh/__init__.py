"""`make mesh`: the canary and shadow experiment on one machine, programmed by Istio's own
code (docs/mesh.md). One module per job:

  __main__    the command line (`python -m smsdev.mesh run|upgrade`) and a run's life
  supervisor  LocalMesh: the processes, Istio's configuration and the Prometheus in step
  plan        the chart rendered with the local values, one Workload per Deployment
  render      the chart through the real Helm engine
  overlay     what a cluster gives Istio and one machine does not
  bootstrap   the Envoys' bootstrap (admin and the way to Istio, nothing else)
  scrape      what the mesh's Prometheus scrapes and evaluates, from the render
  control     the running experiment's upgrade API, server and client
  instance    the running experiment's record (instance.json)
  ports       its addresses (MESH_*) and free ports
  banner      what it prints: the banner and the summary per version
  traffic     `make mesh-traffic`: labelled visitors through the gateway

Needs the mesh virtualenv's packages (istio/local/requirements.txt: helm-python-sdk, PyYAML,
requests); istio/local/xds is Istio's control plane it runs (Go).
"""
