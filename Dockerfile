# imserver container image: built from this repository (used by deploy/docker-compose.yml).
#   docker build -t imserver .
# The server runs as an unprivileged user; /data holds the embedded stores when those are
# used (the compose stack uses ScyllaDB and Redis instead). io_uring inside containers is
# often blocked by the default seccomp profile: the server then falls back to epoll by
# itself (the start-up summary says which driver runs).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin imserver \
 && cp target/release/imserver /imserver

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data --shell /usr/sbin/nologin imserver \
 && mkdir -p /data /etc/imserver && chown imserver /data
COPY --from=build /imserver /usr/local/bin/imserver
COPY config/imserver.toml /etc/imserver/imserver.toml
USER imserver
WORKDIR /data
# TCP, WebSocket, wss, TCP+TLS, HTTP API / metrics.
EXPOSE 19095 9095 8443 19443 10000
ENV IMSERVER_CONFIG=/etc/imserver/imserver.toml
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD curl -fsS http://127.0.0.1:10000/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/imserver"]
