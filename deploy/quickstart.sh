#!/usr/bin/env bash
# Installs what criusd needs, builds it, and starts it in the foreground with its
# built-in defaults (socket /run/crius/crius.sock). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends protobuf-compiler runc crun iproute2 ca-certificates
cargo build --release --bins
# The deployable shim: static, size-optimised (about 1.7 MiB resident when idle).
bash crates/shim/scripts/build-small.sh
install -m 0755 target/release/criusd /usr/local/bin/
install -m 0755 target/shim-small/x86_64-unknown-linux-gnu/release/crius-shim /usr/local/bin/
exec /usr/local/bin/criusd "$@"
