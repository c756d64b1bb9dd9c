# edge in a container: build stage (host + plugins), then a slim runtime image that runs as
# a non-root user with the config and plugins mounted read-only and the state on a volume.
#
#   docker build -t edge .
#   docker run -d --name edge -p 9464:9464 \
#     -v /etc/edge/edge.yaml:/etc/edge/edge.yaml:ro -v /opt/edge/plugins:/opt/edge/plugins:ro \
#     -v edge-state:/var/lib/edge --env-file /etc/edge/edge.env edge
#
# In the mounted edge.yaml: `state_dir: /var/lib/edge`, `http.listen: 0.0.0.0:9464` (to
# publish the page and /metrics), `plugins_dir: /opt/edge/plugins`. The image also carries
# the shipped plugins in /usr/share/edge/plugins.

FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN scripts/build-plugins && cargo build --release --locked --bin edge

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/edge --shell /usr/sbin/nologin edge \
    && mkdir -p /var/lib/edge /etc/edge /opt/edge/plugins \
    && chown edge:edge /var/lib/edge && chmod 700 /var/lib/edge
COPY --from=build /src/target/release/edge /usr/local/bin/edge
COPY --from=build /src/plugins/dist/ /usr/share/edge/plugins/
USER edge
WORKDIR /var/lib/edge
VOLUME ["/var/lib/edge"]
EXPOSE 9464
# Liveness only: /readyz and `edge status` say whether the fleet is healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD curl -fsS http://127.0.0.1:9464/healthz >/dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/edge"]
CMD ["run", "/etc/edge/edge.yaml"]
