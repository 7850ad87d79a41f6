# The sluice binary in a small image: built with the Go toolchain, run as a non-root user on a
# distroless base (CA certificates for Azure, no shell).
#
#   docker build -t sluice .
#   docker run --rm -p 8080:8080 -e SLUICE_HTTP_ADDR=0.0.0.0:8080 \
#     -e SLUICE_POSTGRES_DSN=postgres://… -e SLUICE_BLOB_CONNECTION_STRING=… sluice demo
#
# .ci/run builds it when a Docker engine is there (this project's CI machines have none).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sluice ./cmd/sluice

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# The local archive (blob.dir) when no connection string is set: mount a volume here.
WORKDIR /var/lib/sluice
ENV SLUICE_BLOB_DIR=/var/lib/sluice/blobs
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["demo"]
