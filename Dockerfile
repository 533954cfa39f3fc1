# pmon-agent in a small image. Not built by CI (its machine has no container
# engine); build and try it by hand, see docs/INSTALL.md:
#   docker build -t pmon-agent .
#   docker run --rm pmon-agent --version
#
# Build stage: bookworm, like the final image. The binaries link against
# glibc and are built with packed relocations (DT_RELR, glibc >= 2.36, see
# build.rs): built on a newer Debian they may not start on bookworm.
# Cargo.toml asks for Rust >= 1.94; 1.95 is what CI tests with.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && install -D -m 0755 -t /out target/release/pmon-agent target/release/pmon-agent-holder

FROM debian:bookworm-slim
# The agent needs ca-certificates alone (OpenSSL is built in; the system's
# CAs are what it trusts for webhooks and sslrootcert=system). tini reaps
# orphaned processes and passes signals on (a process with pid 1 gets neither
# done by itself). python3 is for the programs it wraps; leave it out with
#   docker build --build-arg EXTRA_PACKAGES= -t pmon-agent .
# or list your own.
ARG EXTRA_PACKAGES="python3"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini ca-certificates ${EXTRA_PACKAGES} \
 && rm -rf /var/lib/apt/lists/*

# Both binaries side by side: `wrap` runs pmon-agent-holder from pmon-agent's directory.
COPY --from=build /out/pmon-agent /out/pmon-agent-holder /usr/local/bin/
# The documented defaults (parsers.paths: [parsers] is /etc/pmon/parsers: mount
# your parser files there); the shipped parsers are compiled into the binary,
# their sources and the annotated EXAMPLE.yml are kept for reference.
COPY config.yml /etc/pmon/config.yml
COPY parsers/ /usr/local/share/doc/pmon-agent/parsers/

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/pmon --shell /usr/sbin/nologin pmon \
 && install -d -o pmon -g pmon -m 0750 /var/lib/pmon \
 && install -d -o pmon -g pmon -m 0755 /work \
 && install -d -m 0755 /etc/pmon/parsers

ENV PMON_DATA_DIR=/var/lib/pmon \
    PMON_CONFIG=/etc/pmon/config.yml
# The store (pmon.db), checkpoints, plain log files: keep them in a volume.
VOLUME ["/var/lib/pmon"]
USER pmon
WORKDIR /work
ENTRYPOINT ["/usr/bin/tini", "--", "pmon-agent"]
CMD ["--help"]
