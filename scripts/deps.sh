#!/bin/sh
# Installs the Debian 12 packages the build, the tests and the demo need; a no-op when all are present.
set -e
PKGS="build-essential pkg-config clang libclang-rt-14-dev nginx nginx-dev libpcre2-dev zlib1g-dev libssl-dev
libjansson-dev liburcu-dev libmicrohttpd-dev libcmocka-dev prometheus python3 python3-prometheus-client
libtest-base-perl perl systemd curl libcurl4-openssl-dev wrk valgrind procps"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
# Debian starts the packaged services on install; the project starts its own on loopback.
for s in nginx prometheus prometheus-node-exporter; do
    $SUDO systemctl disable --now "$s" >/dev/null 2>&1 || $SUDO service "$s" stop >/dev/null 2>&1 || true
done
