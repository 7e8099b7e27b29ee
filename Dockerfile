# syntax=docker/dockerfile:1.7
# One image per function, by build argument:
#
#   docker build --build-arg FUNCTION=message-create -t missive/message-create .
#   docker build --build-arg FUNCTION=web -t missive/web .        # the browser app
#   docker build --build-arg FUNCTION=missive -t missive/missive . # the CLI (migrations)
#
# FUNCTION is a workspace package (a crate under functions/, or `missive`); its binary
# becomes /app/function. The binary is linked statically (glibc's static libc, which
# since 2.34 includes the `files` and `dns` resolvers; scripts/check_static_dns.sh tests
# that a static build finds MariaDB, Redis and Kafka by DNS name), so the final stage is distroless
# `static`: no shell, no package manager, no libc, about 2 MB under the binary. Nothing
# is written at run time outside /tmp, so the root file system can be read-only.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20.19

# --- Rust dependencies, cached apart from the sources (cargo-chef) --------------------
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG FUNCTION
# Static glibc needs the target spelled out, so that build scripts and proc macros
# (built for the host) stay dynamic.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu \
    CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
RUN test -n "${FUNCTION}" || { echo "--build-arg FUNCTION=<crate> is required" >&2; exit 1; }
# `aws`: credentials from Secrets Manager and IAM tokens (docs/operations.md, "Cloud
# credentials"); nothing is fetched unless configured.
RUN cargo chef cook --release --locked --recipe-path recipe.json --package "${FUNCTION}" --features aws
COPY . .
RUN cargo build --release --locked --package "${FUNCTION}" --features aws \
    && mkdir -p /out/site \
    && cp "target/x86_64-unknown-linux-gnu/release/${FUNCTION}" /out/function

# --- The browser app (used by FUNCTION=web only; cached for the others) ---------------
FROM node:${NODE_VERSION}-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY frontend/ ./
RUN npm run build

FROM builder AS collect
ARG FUNCTION
COPY --from=frontend /src/frontend/dist /tmp/site
RUN if [ "${FUNCTION}" = "web" ]; then cp -r /tmp/site/. /out/site/; fi

# --- What runs ---
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: Knative probes /healthz and /readyz, and the image has no shell or client to run one---------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
ARG FUNCTION
LABEL org.opencontainers.image.title="missive-${FUNCTION}" \
      org.opencontainers.image.description="Missive function ${FUNCTION} (Knative Service)" \
      org.opencontainers.image.licenses="MIT"
COPY --from=collect /out/ /app/
# distroless' nonroot user; the manifests also say runAsNonRoot.
USER 65532:65532
ENV PORT=8080 \
    FRONTEND_DIR=/app/site
EXPOSE 8080
ENTRYPOINT ["/app/function"]
