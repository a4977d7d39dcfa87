# syntax=docker/dockerfile:1
#
# The vramseal daemon as a container image:
#
#   docker build -t vramseal .
#   docker run --runtime=nvidia --gpus all -p 7788:7788 \
#     -v vramseal-data:/var/lib/vramseal \
#     -v "$PWD/token:/run/secrets/vramseal/token:ro" vramseal
#
# The token file (at least 16 random characters) must be readable by the
# image's user, uid 65532, and by no one else.
#
# The binary is built without cgo, but it is not static: the CUDA driver is
# loaded at run time with dlopen (github.com/ebitengine/purego), so the
# binary links libc dynamically. The runtime base is therefore distroless
# "base" (glibc, no shell, no package manager), not "static" or scratch,
# where the binary would not start. deploy/docker_test.go checks both.
# The NVIDIA container runtime mounts libcuda.so.1 into the container.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/vramseal ./cmd/vramseal && \
    mkdir -p /out/data

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/vramseal /usr/local/bin/vramseal
# The data directory (worker secret, audit log, attach socket) belongs to
# the non-root user, so that a volume mounted on it starts with that owner.
COPY --from=build --chown=65532:65532 /out/data /var/lib/vramseal
USER 65532:65532
VOLUME ["/var/lib/vramseal"]
# The HTTP API, /metrics, /healthz and /readyz.
EXPOSE 7788
ENTRYPOINT ["/usr/local/bin/vramseal", "serve"]
# A non-loopback --listen needs --token-file: mount the token there (a
# Docker or Kubernetes secret). --device cuda: a node without a usable GPU
# fails to start instead of falling back to the simulator.
CMD ["--listen", "0.0.0.0:7788", "--device", "cuda", "--data-dir", "/var/lib/vramseal", "--token-file", "/run/secrets/vramseal/token", "--log-format", "json"]
