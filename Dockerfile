# wecom-zone: multi-stage build, glibc runtime (Debian bookworm), non-root, port 8080.
#   docker build -t wecom-zone .
#   docker run --rm -p 8080:8080 -v "$PWD/config:/app/config:ro" wecom-zone
# For the zone: docker create --name wz wecom-zone && docker export wz > wecom-zone-rootfs.tar,
# or, without a Docker engine, scripts/build-zone-rootfs.sh (the same content; README, "Deploying
# to the zone").
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY stub-sdk ./stub-sdk
RUN cargo build --release --locked --bin wecom-zone \
 && strip --strip-debug target/release/wecom-zone

FROM debian:bookworm-slim
# What goes in is listed once, for this image and for scripts/build-zone-rootfs.sh: the Debian
# packages in deploy/zone-packages, everything else laid out by deploy/zone-layout.sh (the binary,
# user wecom with uid 10001, /app/config, /app/data, /app/start.sh).
COPY deploy/zone-packages deploy/zone-layout.sh config/wecom-zone.example.toml /tmp/stage/
COPY --from=build /src/target/release/wecom-zone /tmp/stage/wecom-zone
RUN apt-get update \
 && grep -v '^\s*\(#\|$\)' /tmp/stage/zone-packages | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* \
 && sh /tmp/stage/zone-layout.sh / /tmp/stage/wecom-zone /tmp/stage/wecom-zone.example.toml \
 && rm -rf /tmp/stage
# The classic archive (会话内容存档): WeCom's finance SDK, glibc x86-64 only (it needs libz.so.1,
# from deploy/zone-packages). Fetch it with scripts/fetch-finance-sdk.sh, then uncomment and set
# [finance_sdk] library = "/opt/wecom/libWeWorkFinanceSdk_C.so":
# COPY vendor/finance-sdk/libWeWorkFinanceSdk_C.so /opt/wecom/libWeWorkFinanceSdk_C.so
WORKDIR /app
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/wecom-zone", "healthcheck"]
# The zone runs its start command with absolute paths only and maybe no PATH or environment;
# /app/start.sh serves /app/config/wecom-zone.toml, as uid 10001 even when started as root.
ENTRYPOINT ["/app/start.sh"]
