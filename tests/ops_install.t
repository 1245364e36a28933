#!/bin/bash
# `make install DESTDIR=...` lays out programs, the nginx module, configs and systemd units where
# Debian's nginx and systemd look for them, and what it installs is valid: nginx -t accepts the
# module with the site config, systemd-analyze accepts the units, promtool the Prometheus files.
cd "$(dirname "$0")/.." || exit 1
root=$(mktemp -d /tmp/hodei-ops-install.XXXXXX)
trap 'rm -rf "$root"' EXIT
programs="hodei-scheduler hodei-worker hodeictl hodei-metrics"

n=0
ok() {  # ok CONDITION-STATUS NAME [DIAGNOSTIC]
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; [ -n "$3" ] && sed 's/^/# /' <<<"$3"; fi
}
echo "1..17"

out=$(make --no-print-directory install DESTDIR="$root/d" 2>&1); ok $? "make install DESTDIR=... succeeds" "$out"
d=$root/d
missing=""
for p in $programs; do [ -x "$d/usr/local/bin/$p" ] || missing="$missing $p"; done
[ -z "$missing" ]; ok $? "programs in \$(PREFIX)/bin" "missing:$missing"
[ -f "$d/usr/lib/nginx/modules/ngx_http_hodei_module.so" ]; ok $? "module in /usr/lib/nginx/modules"
grep -qx 'load_module modules/ngx_http_hodei_module.so;' "$d/usr/share/nginx/modules-available/mod-http-hodei.conf"
ok $? "modules-available/mod-http-hodei.conf loads the module"
[ "$(readlink "$d/etc/nginx/modules-enabled/50-mod-http-hodei.conf")" = /usr/share/nginx/modules-available/mod-http-hodei.conf ]
ok $? "modules-enabled/50-mod-http-hodei.conf links to modules-available"
[ -f "$d/etc/nginx/sites-available/hodei.conf" ]; ok $? "site config in /etc/nginx/sites-available"
missing=""
for f in scheduler.json prometheus.yml hodei.rules.yml grafana/hodei.json; do
    [ -s "$d/etc/hodei/$f" ] || missing="$missing $f"
done
[ -z "$missing" ]; ok $? "configs in /etc/hodei" "missing:$missing"
/usr/bin/python3 -c 'import json, sys; [json.load(open(f)) for f in sys.argv[1:]]' \
    "$d/etc/hodei/scheduler.json" "$d/etc/hodei/grafana/hodei.json" 2>/dev/null
ok $? "scheduler.json and the dashboard are valid JSON"
out=$(promtool check config "$d/etc/hodei/prometheus.yml" 2>&1); ok $? "installed prometheus.yml finds its rules" "$out"
grep -q '^u hodei ' "$d/usr/lib/sysusers.d/hodei.conf"; ok $? "sysusers.d declares the hodei user"

unit=$d/lib/systemd/system/hodei-scheduler.service
grep -q '^ExecStart=/usr/local/bin/hodei-scheduler ' "$unit"; ok $? "scheduler unit runs \$(PREFIX)/bin/hodei-scheduler"
grep -q '^Group=www-data' "$unit" && grep -q '^UMask=0027' "$unit"
ok $? "scheduler unit leaves the segment readable by group www-data"

out=$(make --no-print-directory install DESTDIR="$root/p" PREFIX=/usr 2>&1)
grep -q '^ExecStart=/usr/bin/hodei-worker ' "$root/p/lib/systemd/system/hodei-worker@.service" \
    && [ -x "$root/p/usr/bin/hodeictl" ] && [ -f "$root/p/usr/lib/nginx/modules/ngx_http_hodei_module.so" ]
ok $? "PREFIX=/usr moves programs and ExecStart, not the module" "$out"

# systemd-analyze checks that ExecStart exists: point it at the installed copies.
mkdir -p "$root/units"
sed "s|/usr/local/bin/|$d/usr/local/bin/|" "$unit" > "$root/units/hodei-scheduler.service"
sed "s|/usr/local/bin/|$d/usr/local/bin/|" "$d/lib/systemd/system/hodei-worker@.service" > "$root/units/hodei-worker@1.service"
out=$(systemd-analyze verify "$root/units/hodei-scheduler.service" "$root/units/hodei-worker@1.service" 2>&1)
[ $? -eq 0 ] && [ -z "$out" ]; ok $? "systemd-analyze verify: units clean" "$out"
out=$(systemd-analyze security --offline=yes --threshold=30 "$root/units/hodei-scheduler.service" 2>&1)
ok $? "scheduler unit is hardened (systemd-analyze security exposure <= 3.0)" "$(tail -1 <<<"$out")"

# nginx -t: the installed module with the installed site config, as Debian's nginx.conf would
# include it (load_module from modules-enabled at top level, the site inside http).
mkdir -p "$root/nginx/logs"
sed "s|modules/|$d/usr/lib/nginx/modules/|" "$d/usr/share/nginx/modules-available/mod-http-hodei.conf" > "$root/nginx/mod.conf"
cat > "$root/nginx/nginx.conf" <<CONF
include $root/nginx/mod.conf;
error_log $root/nginx/logs/error.log;
pid $root/nginx/nginx.pid;
events {}
http {
    access_log off;
    include $d/etc/nginx/sites-available/hodei.conf;
}
CONF
out=$(nginx -t -q -p "$root/nginx" -c "$root/nginx/nginx.conf" 2>&1); ok $? "nginx -t accepts the module and hodei.conf" "$out"
grep -q 'hodei_metrics;' "$d/etc/nginx/sites-available/hodei.conf" \
    && grep -A6 'location = /api/v1/metrics' "$d/etc/nginx/sites-available/hodei.conf" | grep -q 'deny  *all;'
ok $? "metrics location is served by hodei_metrics and denied to all but loopback"
