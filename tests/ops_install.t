#!/bin/bash
# `make install DESTDIR=...` lays out programs, the nginx module, configs and systemd units where
# Debian's nginx and systemd look for them, and what it installs is valid and safe: nginx -t
# accepts the module with the site config, which serves loopback only and answers its own
# refusals in JSON (checked on a live nginx); systemd-analyze accepts the units, which pass the
# tokens file; the tokens file is private, and a second install keeps it.
cd "$(dirname "$0")/.." || exit 1
root=$(mktemp -d /tmp/hodei-ops-install.XXXXXX)
nginx_pid=
trap '[ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null; wait; rm -rf "$root"' EXIT
port=$(( ${HODEI_OPS_PORT_BASE:-18300} + 10 ))   # nginx; nothing listens on $port + 1
programs="hodei-scheduler hodei-worker hodeictl hodei-metrics"

n=0
ok() {  # ok CONDITION-STATUS NAME [DIAGNOSTIC]
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; [ -n "$3" ] && sed 's/^/# /' <<<"$3"; fi
}
echo "1..27"

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
for f in scheduler.json prometheus.yml hodei.rules.yml hodei.native.rules.yml grafana/hodei.json; do
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
grep -q '^ExecStart=.* --tokens /etc/hodei/tokens' "$unit" && grep -q '^ExecReload=/bin/kill -HUP \$MAINPID' "$unit"
ok $? "scheduler unit passes the tokens file; reload re-reads it (SIGHUP)"
grep -qx 'StateDirectory=hodei' "$unit" && grep -q '"state_dir": "/var/lib/hodei"' "$d/etc/hodei/scheduler.json"
ok $? "scheduler unit gives the daemon /var/lib/hodei (StateDirectory=), where scheduler.json keeps its state"
worker_unit=$d/lib/systemd/system/hodei-worker@.service
grep -q '^LoadCredential=token:/etc/hodei/worker.token' "$worker_unit" \
    && grep -q '^ExecStart=.* --token-file %d/token ' "$worker_unit"
ok $? "worker unit gets its token as a systemd credential"

tokens=$d/etc/hodei/tokens
[ -f "$tokens" ] && [ ! -s "$tokens" ] && [ "$(stat -c %a "$tokens")" = 600 ]
ok $? "an empty tokens file, mode 0600" "$(ls -l "$tokens" 2>&1)"
grep -qx 'z /etc/hodei/tokens 0600 hodei hodei -' "$d/usr/lib/tmpfiles.d/hodei.conf"
ok $? "tmpfiles.d gives the tokens file to hodei, mode 0600"
build/hodeictl token create --role admin --tokens "$tokens" > /dev/null 2>&1
out=$(make --no-print-directory install DESTDIR="$root/d" 2>&1)
[ "$(build/hodeictl token list --tokens "$tokens" 2>&1 | wc -l)" = 2 ]
ok $? "a second make install keeps the tokens in the tokens file" "$out$(cat "$tokens")"

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
    include $root/nginx/site.conf;
}
CONF
# the installed site with its snippet include pointed at the installed snippet
site=$d/etc/nginx/sites-available/hodei.conf
snippet=$d/etc/nginx/snippets/hodei-api.conf
sed "s|/etc/nginx/snippets/|$d/etc/nginx/snippets/|" "$site" > "$root/nginx/site.conf"
out=$(nginx -t -q -p "$root/nginx" -c "$root/nginx/nginx.conf" 2>&1); ok $? "nginx -t accepts the module and hodei.conf" "$out"
grep -q 'hodei_metrics;' "$snippet" \
    && grep -A6 'location = /api/v1/metrics' "$snippet" | grep -q 'deny  *all;'
ok $? "metrics location is served by hodei_metrics and denied to all but loopback"
listens=$(grep -h '^[^#]*listen ' "$site" "$snippet")
[ "$listens" = "    listen 127.0.0.1:8080;" ]
ok $? "the site listens on loopback only (TLS for remote clients is a commented example)" "$listens"
grep -q '^ *# *listen 443 ssl;' "$site" && grep -q '^ *# *include /etc/nginx/snippets/hodei-api.conf;' "$site"
ok $? "a commented TLS server serves the same API"

# The installed site on a live nginx (listen and snippet moved to the test's scratch tree, the
# scheduler absent): its own refusals are the API's JSON error bodies.
sed -i -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$port;|" \
    -e "s|server 127.0.0.1:8081;|server 127.0.0.1:$((port + 1));|" "$root/nginx/site.conf"
sed -i -e 's|^events {}|events {}\ndaemon off;|' "$root/nginx/nginx.conf"
[ "$(id -u)" = 0 ] && sed -i '1i user root root;' "$root/nginx/nginx.conf"
sed -i "s|^    access_log off;|    access_log off;\n    client_body_temp_path $root/nginx/body;\n    proxy_temp_path $root/nginx/proxy;|" "$root/nginx/nginx.conf"
nginx -p "$root/nginx" -c "$root/nginx/nginx.conf" 2>"$root/nginx/logs/stderr" &
nginx_pid=$!
for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
body=$(head -c 70000 /dev/zero | tr '\0' x | curl -s -w ' %{http_code}' -H 'Content-Type: application/json' \
       --data-binary @- "http://127.0.0.1:$port/api/v1/jobs" | tr -d '\n')
grep -q '^{"error":"too_large","detail":"[^"]*"} 413$' <<<"$body"
ok $? "a body over 64 KiB: nginx answers 413 in JSON" "$body$(cat "$root/nginx/logs/stderr")"
body=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/api/v1/jobs" | tr -d '\n')
grep -q '^{"error":"scheduler_unavailable","detail":"[^"]*"} 502$' <<<"$body"
ok $? "the scheduler down: nginx answers 502 in JSON" "$body"
kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null; nginx_pid=
