# The clusterdns image for those who build with Docker (BuildKit, Docker 23 or later):
#
#   docker build --build-arg VERSION="$(git describe --always --dirty --tags)" -t clusterdns/coredns:dev .
#
# It holds what `./build.sh image` writes without a daemon (internal/image): a static /coredns,
# /etc/passwd and /etc/group naming the non-root user 65532, and a CA bundle, on scratch.
# internal/image's tests check that the lines below match that package's settings.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
# Only what the binary is built from, so the rest of the tree never busts the cache.
COPY plugin.cfg ./
COPY cmd/ cmd/
COPY internal/ internal/
COPY plugin/ plugin/
ARG VERSION=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go generate ./cmd/coredns && \
    go build -trimpath \
        -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${VERSION}" \
        -o /out/coredns ./cmd/coredns
RUN mkdir -p /out/etc/ssl/certs && \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ && \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/etc/passwd && \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /out/etc/group

FROM scratch
COPY --from=build /out/etc/ /etc/
COPY --from=build /out/coredns /coredns
USER 65532:65532
EXPOSE 53/udp 53/tcp 9153/tcp
ENTRYPOINT ["/coredns"]
CMD ["-conf", "/etc/coredns/Corefile"]
