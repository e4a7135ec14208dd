"""`make bench`: what the services cost and hold, every comparison measured in the same run
on the same cores (load generator included), every load bounded in time on 127.0.0.1.
Run it through scripts/bench.sh, which installs the load generators and the Python
comparison services and builds the release binaries; every process of ours is started by
smsdev.stack (the one description of the local stack). The figures, their targets and their
history: docs/performance.md.

  python -m smsdev.bench [--duration 5] [--only ort,metrics,ready,throughput,shadow,overload,oip]

One job a module:
  cli          the command line and the order of the sections; the run's JSON
  session      one run: options, work directory, servers, load generators, result
  servers      the servers it starts: ours, FastAPI + onnxruntime, Seldon's MLServer
  loadgen      the load generators: h2load (gRPC, prebuilt frames) and wrk (HTTP)
  frames       the protobuf bytes it sends (Classify, ModelInfer) or writes (ONNX metadata)
  measure      one measured load, checked on the server's own counters (a row of the run)
  probes       what runs beside a load: peak memory, a new caller apart from the flood
  procfs       what /proc says: memory of a process tree, others' CPU, listen overflows
  facts        what it reads from the chart's values and the model service's code
  artifact     the pre-lean dense models/v1, from the history
  sections/    one module per section: ort (and metrics), ready, throughput, shadow, oip,
               overload
  targets      the targets each figure is held to, named by what they measure
  report       what it prints
  record       the run written into docs/performance.md (its latest-run table and history)

Missed targets are reported, not failed on; errors fail it: a crash, a gRPC code or HTTP
status that should not be there, a service unhealthy after overload, a comparison that did
not run.
"""
