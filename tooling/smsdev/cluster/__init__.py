"""`make cluster`: a real Kubernetes on this machine, the chart installed on it by the real
helm (docs/local-cluster.md). One module per job:

  __main__    the command line (`python -m smsdev.cluster run`) and a run's life
  supervisor  Cluster: each step that brings the cluster up, and the stop in order
  settings    its addresses and paths (CLUSTER_*)
  objects     what it applies beside the chart, and the pinned projects' versions
  gomod       the pinned projects' files in Go's module cache
  netns       its network namespace and the relays to this machine's loopback
  pki         its certificates and kubeconfigs

The Go programs stay under cluster/: the node (cluster/node) and the tools' pinned
wrapper modules (cluster/build).
"""
