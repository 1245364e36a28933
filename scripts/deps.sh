#!/bin/sh
# Installs the Debian 12 packages the build, the tests and the demo need; a no-op when all are present.
set -e
PKGS="build-essential pkg-config clang libclang-rt-14-dev nginx nginx-dev libpcre2-dev zlib1g-dev libssl-dev
libjansson-dev liburcu-dev libmicrohttpd-dev libcmocka-dev prometheus python3 python3-prometheus-client
libtest-base-perl perl systemd curl libcurl4-openssl-dev wrk valgrind procps
libsqlite3-dev sqlite3 protobuf-compiler python3-protobuf"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Debian starts a packaged service on install (nginx on :80, Prometheus on :9090); the project
# starts its own, on loopback.  policy-rc.d is Debian's way to say "not now".
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
