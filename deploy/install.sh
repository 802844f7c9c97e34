#!/bin/sh
# Installs crius onto a node: criusd and crius-shim into <root>/usr/local/bin, the
# systemd unit into <root>/etc/systemd/system/crius.service, and the default
# configuration into <root>/etc/crius/config.toml when there is none (an operator's
# edited configuration is never replaced). Then it starts or restarts crius through
# the node's systemd. POSIX sh: it runs on a node and in the installer image (busybox).
#
#   install.sh [--host-root DIR] [--criusd FILE] [--shim FILE] [--unit FILE]
#              [--config FILE] [--no-systemd] [--restart]
#
# --host-root DIR  the node's root (default /). The installer image passes /host, the
#                  node's / mounted into its container; systemctl then runs chrooted
#                  into DIR, where the node's systemctl talks to the node's systemd
#                  through DIR/run.
# --criusd, --shim, --unit, --config
#                  what to install; by default the files next to this script
#                  (criusd, crius-shim, crius.service, config.toml).
# --no-systemd     install the files only.
# --restart        restart crius even when nothing changed.
#
# Binaries are replaced by rename, never written in place, so a running criusd and the
# running shims keep their files. A second run with the same files changes nothing and
# says so; crius is restarted only when something changed. Containers survive the
# restart: the unit's KillMode=process leaves the shims running, and the new criusd
# finds them. Before anything is written, `criusd check` must pass for the node.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=/
criusd=$here/criusd
shim=$here/crius-shim
unit=$here/crius.service
config=$here/config.toml
systemd=yes
restart=no

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --host-root) root=${2:?--host-root needs a directory}; shift 2 ;;
    --criusd) criusd=${2:?--criusd needs a file}; shift 2 ;;
    --shim) shim=${2:?--shim needs a file}; shift 2 ;;
    --unit) unit=${2:?--unit needs a file}; shift 2 ;;
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --no-systemd) systemd=no; shift ;;
    --restart) restart=yes; shift ;;
    -h | --help) usage ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage ;;
    esac
done

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root"
[ -d "$root" ] || fail "host root $root is not a directory"
for f in "$criusd" "$shim" "$unit" "$config"; do
    [ -f "$f" ] || fail "$f: no such file"
done
root=${root%/}
# What the node sees as /X is $root/X here.
at() { echo "$root$1"; }

# The node must be able to run crius: the kernel (shared with this container), the
# node's OCI runtimes and iptables, free space under its roots.
installed_config=$(at /etc/crius/config.toml)
check_config=$config
[ -f "$installed_config" ] && check_config=$installed_config
if ! report=$("$criusd" --config "$check_config" check --host-root "${root:-/}" 2>&1); then
    echo "$report" >&2
    fail "refusing to install: the node cannot run crius (the FAIL rows above)"
fi
echo "$report"

changed=no

# install_file SRC DEST MODE: writes DEST by rename unless it already holds SRC.
install_file() {
    dest=$(at "$2")
    if [ -f "$dest" ] && cmp -s "$1" "$dest"; then
        chmod "$3" "$dest"
        echo "unchanged: $2"
        return
    fi
    mkdir -p "$(dirname "$dest")"
    tmp=$dest.crius-install.$$
    trap 'rm -f "$tmp"' EXIT
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    sync
    mv -f "$tmp" "$dest"
    trap - EXIT
    changed=yes
    echo "installed: $2"
}

install_file "$criusd" /usr/local/bin/criusd 0755
install_file "$shim" /usr/local/bin/crius-shim 0755
install_file "$unit" /etc/systemd/system/crius.service 0644
if [ -e "$installed_config" ]; then
    echo "kept: /etc/crius/config.toml (already there; never replaced)"
else
    install_file "$config" /etc/crius/config.toml 0644
fi

if [ "$systemd" = no ]; then
    echo "files installed; systemd not touched (--no-systemd)"
    exit 0
fi

systemctl_() {
    if [ -z "$root" ]; then
        systemctl "$@"
    else
        chroot "$root" systemctl "$@"
    fi
}

if [ "$changed" = yes ] || [ "$restart" = yes ]; then
    systemctl_ daemon-reload
    systemctl_ enable crius.service
    systemctl_ restart crius.service
    echo "crius restarted"
elif systemctl_ is-active --quiet crius.service; then
    echo "nothing changed; crius is running and was not restarted"
else
    systemctl_ enable crius.service
    systemctl_ start crius.service
    echo "nothing changed; crius was not running and is started"
fi
