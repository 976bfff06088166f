# syntax=docker/dockerfile:1
# batchmesh image: sidecar, controlplane and model, static, as user 1337.
#
#   make image                     # docker build, or buildah bud without Docker
#   docker build --build-arg VERSION=v0.1.0 -t batchmesh:v0.1.0 .
#
# docs/capture.md describes how the sidecar and `sidecar redirect` run in a pod.

ARG GO_IMAGE=golang:1.26

FROM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=devel
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out && \
    for b in sidecar controlplane model; do \
      go build -trimpath \
        -ldflags "-s -w -X github.com/batchmesh/batchmesh/internal/version.stamp=${VERSION}" \
        -o /out/$b ./$b || exit 1; \
    done && \
    mkdir -p /out/etc/ssl/certs && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ && \
    echo 'batchmesh:x:1337:1337:batchmesh:/:/sbin/nologin' > /out/etc/passwd && \
    echo 'batchmesh:x:1337:' > /out/etc/group && \
    mkdir -m 1777 /out/tmp

FROM scratch
ARG VERSION=devel
LABEL org.opencontainers.image.title="batchmesh" \
      org.opencontainers.image.description="Service-mesh sidecar for AI inference: dynamic batching, caching, capture" \
      org.opencontainers.image.source="https://github.com/batchmesh/batchmesh" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/etc/ /etc/
COPY --from=build --chown=1337:1337 /out/tmp /tmp
COPY --from=build /out/sidecar /out/controlplane /out/model /usr/local/bin/
ENV PATH=/usr/local/bin
USER 1337:1337
EXPOSE 15000 15001
ENTRYPOINT ["/usr/local/bin/sidecar"]
