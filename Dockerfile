# A static binary on distroless: no shell, no package manager, non-root.
# Build: docker build -t kube-event-pipe:0.1.0 .

# Alpine's Rust targets musl by default, so the binary links statically (rustls for the API
# server and S3). The Kafka sink's librdkafka is built from source by rdkafka-sys (configure +
# make, hence bash, make, perl and a C/C++ compiler) and linked statically with OpenSSL's static
# libraries (TLS and SASL SCRAM to the brokers). The toolchain CI builds and tests with.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev bash make perl g++ linux-headers pkgconf \
    openssl-dev openssl-libs-static
ENV OPENSSL_STATIC=1
WORKDIR /src
# The manifest first, so the dependency layer is cached while the sources change.
COPY Cargo.toml Cargo.lock ./
# Cargo reads every target the manifest declares, the bench included.
COPY benches ./benches
# build.rs compiles the protobuf schema (pure Rust, no protoc needed).
COPY build.rs ./
COPY proto ./proto
COPY src ./src
RUN cargo build --release --locked --bin kube-event-pipe \
 && cp target/release/kube-event-pipe /kube-event-pipe

# distroless/static: CA certificates and /etc/passwd with `nonroot` (65532), nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kube-event-pipe /usr/local/bin/kube-event-pipe
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/kube-event-pipe"]
