# syntax=docker/dockerfile:1.7
# The two service images, built from the repository root (the cargo workspace):
#   docker build --target app-service   -t sms-app/app-service:TAG .
#   docker build --target model-service -t sms-app/model-service:TAG .
# app-service: web UI, REST API and /metrics on 8080.
# model-service: gRPC sms.v1 on 8081, Prometheus /metrics on 9464, ONNX Runtime inside;
# the models are NOT in the image: mount a folder holding <version>/model.onnx and
# model.json at MODEL_ROOT (the hostPath /mnt/shared/models on the cluster).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

# --- ONNX Runtime: the shared library from the pinned onnxruntime wheel -------------
# scripts/ensure-ort.sh is the one place that names the version and extracts the
# library (pip picks the wheel for the platform being built, so multi-arch builds work).
FROM python:3.12-slim-${DEBIAN_RELEASE} AS ort
WORKDIR /src
COPY scripts/lib.sh scripts/ensure-ort.sh scripts/
RUN ORT_DIR=/ort scripts/ensure-ort.sh > /ort-path \
 && cp "$(cat /ort-path)" /ort/libonnxruntime.so

# --- Build: both release binaries of the workspace ----------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# .dockerignore lets in only the workspace's crates.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package app-service --package model-service \
 && install -D -m 0755 target/release/app-service /out/app-service \
 && install -D -m 0755 target/release/model-service /out/model-service

# --- Runtime images: glibc (+ libstdc++) only, no shell, non-root -------------------
FROM gcr.io/distroless/cc-debian13:nonroot AS model-service
LABEL org.opencontainers.image.title="sms-app model-service" \
      org.opencontainers.image.description="gRPC SMS spam classifier (ONNX Runtime)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=ort /ort/libonnxruntime.so /usr/lib/onnxruntime/libonnxruntime.so
COPY --from=build /out/model-service /usr/local/bin/model-service
ENV ORT_DYLIB_PATH=/usr/lib/onnxruntime/libonnxruntime.so \
    MODEL_ROOT=/mnt/shared/models \
    GRPC_ADDR=0.0.0.0:8081 \
    METRICS_ADDR=0.0.0.0:9464 \
    INFERENCE_HTTP_ADDR=0.0.0.0:8082 \
    LOG_FORMAT=json
USER 65532:65532
EXPOSE 8081 8082 9464
ENTRYPOINT ["/usr/local/bin/model-service"]

FROM gcr.io/distroless/cc-debian13:nonroot AS app-service
LABEL org.opencontainers.image.title="sms-app app-service" \
      org.opencontainers.image.description="SMS spam detection web UI and API" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/app-service /usr/local/bin/app-service
ENV HTTP_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/app-service"]
