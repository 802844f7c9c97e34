#!/usr/bin/env bash
# Builds crius's installer image (an OCI image layout) from the given binaries with
# Debian's umoci, and optionally pushes it with skopeo; no Docker daemon. The image
# holds busybox (static, for the shell and tools install.sh uses), criusd with the
# shared libraries it links, crius-shim, install.sh, the unit and the default
# configuration, under /install; its entry point installs onto /host and stays.
#
#   build-installer-image.sh --criusd FILE --shim FILE --out DIR [--tag TAG]
#                            [--push docker://HOST/REPO:TAG] [--insecure]
#
# --out DIR   the OCI layout to write (created, or the tag replaced in it)
# --tag TAG   the tag in the layout (default: latest)
# --push REF  also copy the image there (skopeo copy oci:DIR:TAG REF)
# --insecure  the registry of --push is plain HTTP or has an untrusted certificate
#
# Needs: umoci, skopeo (for --push), busybox-static; run as root (umoci unpacks with
# the files' owners).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
criusd= shim= out= tag=latest push= tls=true
while [ $# -gt 0 ]; do
    case $1 in
    --criusd) criusd=$2; shift 2 ;;
    --shim) shim=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --push) push=$2; shift 2 ;;
    --insecure) tls=false; shift ;;
    *) echo "build-installer-image.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
fail() { echo "build-installer-image.sh: $*" >&2; exit 1; }
[ -n "$criusd" ] && [ -f "$criusd" ] || fail "--criusd FILE is required and must exist"
[ -n "$shim" ] && [ -f "$shim" ] || fail "--shim FILE is required and must exist"
[ -n "$out" ] || fail "--out DIR is required"
command -v umoci >/dev/null || fail "umoci is missing (apt-get install umoci)"
busybox=$(command -v busybox) || fail "busybox is missing (apt-get install busybox-static)"
ldd "$busybox" >/dev/null 2>&1 && fail "$busybox is not static (apt-get install busybox-static)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -f "$out/index.json" ] || umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci unpack --image "$out:$tag" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs

mkdir -p "$rootfs"/{bin,install,host,tmp,proc,sys,dev,etc}
install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
# criusd links glibc; the same libraries go along, at the paths the loader looks.
for lib in $(ldd "$criusd" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
install -m 0755 "$criusd" "$rootfs/install/criusd"
install -m 0755 "$shim" "$rootfs/install/crius-shim"
install -m 0755 "$here/install.sh" "$rootfs/install/install.sh"
install -m 0755 "$here/installer/entrypoint.sh" "$rootfs/install/entrypoint.sh"
install -m 0644 "$here/crius.service" "$rootfs/install/crius.service"
install -m 0644 "$here/config.toml" "$rootfs/install/config.toml"

umoci repack --image "$out:$tag" "$work/bundle"
umoci config --image "$out:$tag" --os linux --architecture amd64 \
    --config.env PATH=/bin:/usr/bin:/sbin:/usr/sbin \
    --config.entrypoint /install/entrypoint.sh \
    --config.workingdir /install
umoci gc --layout "$out"
echo "built $out:$tag"
if [ -n "$push" ]; then
    command -v skopeo >/dev/null || fail "skopeo is missing (apt-get install skopeo)"
    skopeo copy --quiet --dest-tls-verify="$tls" "oci:$out:$tag" "$push"
    echo "pushed $push"
fi
