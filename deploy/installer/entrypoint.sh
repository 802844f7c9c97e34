#!/bin/sh
# The installer image's entry point: installs crius onto the node mounted at
# $HOST_ROOT (/host by default), then stays, as a DaemonSet's pod must; SIGTERM ends
# it at once. A failed install exits non-zero, so the pod shows it and retries.
set -eu
# shellcheck disable=SC2086 # INSTALL_ARGS is a list of flags
/install/install.sh --host-root "${HOST_ROOT:-/host}" ${INSTALL_ARGS:-}
echo "install done; waiting (SIGTERM ends this container)"
trap 'exit 0' TERM INT
while :; do
    sleep 3600 &
    wait $! || true
done
