# syntax=docker/dockerfile:1
# One image, both binaries: rstore-node (the store) and rstore-operator.
# Build:  docker build -t rstore:dev .

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the
# binaries are copied out because the target dir is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rstore-node -p rstore-operator \
 && mkdir -p /out \
 && cp target/release/rstore-node target/release/rstore-operator /out/

# distroless/cc: glibc and libgcc only, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/rstore-node /out/rstore-operator /usr/local/bin/
# The StatefulSet and the chart run as 10001; any non-root uid works.
USER 10001:10001
WORKDIR /data
EXPOSE 6379 7379 8080
ENTRYPOINT ["/usr/local/bin/rstore-node"]
