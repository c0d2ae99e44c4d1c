# wecom-zone: multi-stage build, glibc runtime (Debian slim), non-root, port 8080.
#   docker build -t wecom-zone .
#   docker run --rm -p 8080:8080 -v "$PWD/config:/app/config:ro" wecom-zone
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY stub-sdk ./stub-sdk
RUN cargo build --release --locked --bin wecom-zone

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin wecom \
 && mkdir -p /app/config /app/data \
 && chown -R wecom /app/data
COPY --from=build /src/target/release/wecom-zone /usr/local/bin/wecom-zone
COPY config/wecom-zone.example.toml /app/config/wecom-zone.example.toml
# The classic archive (会话内容存档): WeCom's finance SDK, glibc x86-64 only (it needs libz.so.1,
# which bookworm-slim has). Fetch it with scripts/fetch-finance-sdk.sh, then uncomment and set
# [finance_sdk] library = "/opt/wecom/libWeWorkFinanceSdk_C.so":
# COPY vendor/finance-sdk/libWeWorkFinanceSdk_C.so /opt/wecom/libWeWorkFinanceSdk_C.so
WORKDIR /app
USER wecom
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/wecom-zone", "healthcheck"]
# The zone runs its start command like `docker exec`, with PATH possibly lost: absolute paths.
ENTRYPOINT ["/usr/local/bin/wecom-zone"]
CMD ["serve", "--config", "/app/config/wecom-zone.toml"]
