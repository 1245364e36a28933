#!/usr/bin/env bash
# Hodei demo: the whole stack on loopback, fed a steady mixed job stream, watched by a real
# Prometheus.  `make demo` builds first and then runs this script.  Authentication is on: the
# demo makes a tokens file with an admin token (its own), a worker token and one tenant token
# per tenant, and every program it starts uses its token.
#
#   scripts/demo.sh [--duration SECONDS]
#
# Runs until Ctrl-C, or for SECONDS and then exits 0.  Everything it starts runs from one run
# directory and stops with it.  The environment can move it (the tests do):
#   HODEI_DEMO_NGINX_PORT (8080)   nginx: /api/v1/metrics and the API
#   HODEI_DEMO_API_PORT (8081)     hodei-scheduler
#   HODEI_DEMO_PROM_PORT (9090)    Prometheus
#   HODEI_DEMO_DIR                 run directory, kept afterwards (default: a temporary one,
#                                  removed at the end unless something failed)
#   HODEI_DEMO_SCRAPE_INTERVAL (1s), HODEI_DEMO_SUMMARY_EVERY (5, seconds)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
PATH=$PATH:/usr/sbin:/sbin     # nginx lives in /usr/sbin, outside a normal user's PATH
build=$root/build
nginx_port=${HODEI_DEMO_NGINX_PORT:-8080}
api_port=${HODEI_DEMO_API_PORT:-8081}
prom_port=${HODEI_DEMO_PROM_PORT:-9090}
scrape_interval=${HODEI_DEMO_SCRAPE_INTERVAL:-1s}
summary_every=${HODEI_DEMO_SUMMARY_EVERY:-5}
tenants=(acme globex initech umbrella)
workers=3

duration=0
while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=${2:-}; shift 2 || true ;;
        --duration=*) duration=${1#*=}; shift ;;
        -h|--help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "demo: unknown argument '$1' (usage: $0 [--duration SECONDS])" >&2; exit 2 ;;
    esac
done
[[ $duration =~ ^[0-9]+$ ]] || { echo "demo: --duration needs a whole number of seconds" >&2; exit 2; }

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- preconditions -----------------------------------------------------------------------------

for prog in hodei-scheduler hodei-worker hodeictl ngx_http_hodei_module.so; do
    [ -e "$build/$prog" ] || die "$build/$prog is missing: run 'make' (or 'make demo') first"
done
for tool in nginx prometheus curl setsid; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed: run 'make deps' (scripts/deps.sh)"
done

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "nginx:$nginx_port" "hodei-scheduler:$api_port" "Prometheus:$prom_port"; do
    if port_busy "${p#*:}"; then
        die "port 127.0.0.1:${p#*:} (for ${p%%:*}) is already in use.  Stop what listens there
      (see: ss -ltnp 'sport = :${p#*:}'), or move the demo with HODEI_DEMO_NGINX_PORT,
      HODEI_DEMO_API_PORT and HODEI_DEMO_PROM_PORT."
    fi
done

if [ -n "${HODEI_DEMO_DIR:-}" ]; then
    run=$HODEI_DEMO_DIR keep_run=1
    mkdir -p "$run" || die "cannot create $run"
    run=$(cd "$run" && pwd)
else
    run=$(mktemp -d /tmp/hodei-demo.XXXXXX) keep_run=0
fi
mkdir -p "$run/nginx/tmp" "$run/prometheus" "$run/logs"
segment=$run/hodei-metrics

# Every program the demo starts carries this in its environment, so that the end can find
# (and stop) anything that outlived its parent, such as a job's child process.
export HODEI_DEMO_RUN=$run
export HODEI_API=http://127.0.0.1:$nginx_port

# --- process bookkeeping -----------------------------------------------------------------------

declare -A pid_of=()        # name -> pid; each is the leader of its own process group
failed=0

# start NAME COMMAND...: runs COMMAND in a new session (its own process group), logging to
# logs/NAME.log.
start() {
    local name=$1; shift
    setsid "$@" >"$run/logs/$name.log" 2>&1 </dev/null &
    pid_of[$name]=$!
}

alive() { kill -0 "${pid_of[$1]}" 2>/dev/null; }

# stop_groups NAME...: SIGTERM to each group, then wait (up to 8 s) for all, then SIGKILL.
stop_groups() {
    local name t
    for name in "$@"; do
        [ -n "${pid_of[$name]:-}" ] && kill -TERM -- "-${pid_of[$name]}" 2>/dev/null
    done
    for t in $(seq 80); do
        local left=0
        for name in "$@"; do
            [ -n "${pid_of[$name]:-}" ] && kill -0 -- "-${pid_of[$name]}" 2>/dev/null && left=1
        done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for name in "$@"; do
        if [ -n "${pid_of[$name]:-}" ]; then
            kill -KILL -- "-${pid_of[$name]}" 2>/dev/null
            wait "${pid_of[$name]}" 2>/dev/null
            unset "pid_of[$name]"
        fi
    done
}

# Pids (other than this shell) whose environment carries this run's token.  Builtins only:
# a process this function started would carry the token too.
own_processes() {
    local p e
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        while IFS= read -r -d '' e; do
            [ "$e" = "HODEI_DEMO_RUN=$run" ] && { echo "${p#/proc/}"; break; }
        done 2>/dev/null <"$p/environ"
    done
}

cleaned=0
cleanup() {
    [ $cleaned = 1 ] && return
    cleaned=1
    trap '' INT TERM HUP
    [ -t 1 ] && printf '\r\033[K'
    say "demo: stopping..."
    # Producers first, so that nobody reports to an API that is already gone.
    local w names=(stream)
    for ((w = 1; w <= workers; w++)); do names+=("worker$w"); done
    stop_groups "${names[@]}"
    stop_groups nginx prometheus scheduler
    local left
    left=$(own_processes)
    if [ -n "$left" ]; then
        kill -KILL $left 2>/dev/null
        sleep 0.2
    fi
    wait 2>/dev/null
    if [ $failed = 0 ] && [ $keep_run = 0 ]; then
        rm -rf "$run"
    else
        say "demo: logs and data kept in $run"
    fi
    say "demo: stopped; nothing left running."
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

fail() {  # fail MESSAGE [LOG-NAME]: says why, shows the end of the log, stops everything.
    failed=1
    [ -t 1 ] && printf '\r\033[K'
    printf 'demo: %s\n' "$1" >&2
    if [ -n "${2:-}" ] && [ -s "$run/logs/$2.log" ]; then
        printf 'demo: last lines of %s:\n' "$run/logs/$2.log" >&2
        tail -n 15 "$run/logs/$2.log" | sed 's/^/    /' >&2
    fi
    exit 1
}

# wait_for NAME URL: until URL answers 2xx, while NAME is alive (10 s at most).
wait_for() {
    local t
    for t in $(seq 100); do
        curl -fs -o /dev/null --max-time 1 "$2" && return 0
        alive "$1" || fail "$1 exited during startup" "$1"
        sleep 0.1
    done
    fail "$1 did not answer $2 within 10 s" "$1"
}

# --- configuration -------------------------------------------------------------------------------

# Tokens: the demo's own (admin: its summaries and hodeictl), the workers', one per tenant.
tokens=$run/tokens
make_token() {  # make_token FILE ROLE [TENANT]: a new token into FILE (mode 0600)
    (umask 077 && "$build/hodeictl" token create --role "$2" ${3:+--tenant "$3"} --tokens "$tokens" \
         >"$run/$1" 2>>"$run/logs/tokens.log") || fail "cannot create the $2 token" tokens
}
make_token admin.token admin
make_token worker.token worker
for t in "${tenants[@]}"; do make_token "tenant-$t.token" tenant "$t"; done

# nginx: the shipped site and its API locations, moved to the demo's ports and segment, with
# native histograms on (the line the README says to uncomment).
sed -e "s|listen 127\.0\.0\.1:8080;|listen 127.0.0.1:$nginx_port;|" \
    -e "s|127\.0\.0\.1:8081|127.0.0.1:$api_port|" \
    -e "s|/dev/shm/hodei-metrics|$segment|" \
    -e "s|/etc/nginx/snippets/hodei-api.conf|$run/nginx/hodei-api.conf|" \
    "$root/conf/nginx/hodei.conf" >"$run/nginx/hodei.conf"
sed -e "s|^\( *\)# hodei_native_histograms on;|\1hodei_native_histograms on;|" \
    "$root/conf/nginx/hodei-api.conf" >"$run/nginx/hodei-api.conf"
grep -q "listen 127.0.0.1:$nginx_port;" "$run/nginx/hodei.conf" \
    && grep -q "127.0.0.1:$api_port" "$run/nginx/hodei.conf" \
    && grep -q "hodei_segment *$segment;" "$run/nginx/hodei.conf" \
    && grep -q "^ *include $run/nginx/hodei-api.conf;" "$run/nginx/hodei.conf" \
    && grep -q "^ *hodei_native_histograms on;" "$run/nginx/hodei-api.conf" \
    || fail "conf/nginx/hodei.conf and hodei-api.conf no longer have the listen/upstream/segment/include/hodei_native_histograms lines the demo moves"
{
    echo "load_module $build/ngx_http_hodei_module.so;"
    # Workers of a root master would drop to 'nobody', who cannot read the 0640 segment.
    [ "$(id -u)" = 0 ] && echo "user root;"
    cat <<EOF
worker_processes 2;
daemon off;
pid $run/nginx/nginx.pid;
error_log $run/logs/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log $run/logs/nginx-access.log;
    client_body_temp_path $run/nginx/tmp/body;
    proxy_temp_path       $run/nginx/tmp/proxy;
    fastcgi_temp_path     $run/nginx/tmp/fastcgi;
    uwsgi_temp_path       $run/nginx/tmp/uwsgi;
    scgi_temp_path        $run/nginx/tmp/scgi;
    include $run/nginx/hodei.conf;
}
EOF
} >"$run/nginx/nginx.conf"

# Prometheus: the shipped config and rules, scraping the demo's nginx every second, with native
# histograms as conf/prometheus.yml says: the native rules and the job that keeps the classic
# buckets and every bucket's exemplar.
sed -e "s|^\(  *scrape_interval:\).*|\1 $scrape_interval|" \
    -e "s|^\(  *evaluation_interval:\).*|\1 $scrape_interval|" \
    -e "s|- hodei.rules.yml|- $root/conf/hodei.rules.yml|" \
    -e "s|^  # - hodei.native.rules.yml.*|  - $root/conf/hodei.native.rules.yml|" \
    -e "/^#  - job_name: hodei-classic/,\$ s/^#//" \
    -e "s|'localhost:8080'|'127.0.0.1:$nginx_port'|" \
    "$root/conf/prometheus.yml" >"$run/prometheus/prometheus.yml"
grep -q "127.0.0.1:$nginx_port" "$run/prometheus/prometheus.yml" \
    && grep -q "^  - $root/conf/hodei.native.rules.yml" "$run/prometheus/prometheus.yml" \
    && grep -q "^  - job_name: hodei-classic" "$run/prometheus/prometheus.yml" \
    || fail "conf/prometheus.yml no longer has the 'localhost:8080' target and the native-histogram lines the demo moves"

# --- start ---------------------------------------------------------------------------------------

say "demo: run directory $run"
start scheduler "$build/hodei-scheduler" --config "$root/conf/scheduler.json" --tokens "$tokens" \
    --listen "127.0.0.1:$api_port" --segment "$segment" --state-dir "$run/state"
wait_for scheduler "http://127.0.0.1:$api_port/api/v1/health"

nginx -t -q -p "$run/nginx" -c "$run/nginx/nginx.conf" >"$run/logs/nginx.log" 2>&1 \
    || fail "nginx rejects the generated configuration" nginx
start nginx nginx -p "$run/nginx" -c "$run/nginx/nginx.conf"
wait_for nginx "http://127.0.0.1:$nginx_port/api/v1/metrics"

start prometheus prometheus --config.file="$run/prometheus/prometheus.yml" \
    --storage.tsdb.path="$run/prometheus/data" --web.listen-address="127.0.0.1:$prom_port" \
    --enable-feature=native-histograms,exemplar-storage --log.level=warn
wait_for prometheus "http://127.0.0.1:$prom_port/-/ready"

for ((w = 1; w <= workers; w++)); do
    start "worker$w" "$build/hodei-worker" --api "$HODEI_API" --token-file "$run/worker.token" \
        --id "demo-w$w" --cpu-m 2000 --memory-mb 4096
done
# The workers have registered once the admin's GET /workers lists them all.
for t in $(seq 100); do
    registered=$(curl -fs --max-time 1 -H "Authorization: Bearer $(cat "$run/admin.token")" \
                     "$HODEI_API/api/v1/workers" | grep -o '"id":"demo-w[0-9]*"' | wc -l)
    [ "$registered" = "$workers" ] && break
    for ((w = 1; w <= workers; w++)); do alive "worker$w" || fail "worker$w exited during startup" "worker$w"; done
    sleep 0.1
done
[ "$registered" = "$workers" ] || fail "the workers did not register within 10 s" worker1

# The job stream: about four submissions a second across the tenants.  Most jobs are short and
# succeed; some are slow, some exit non-zero, some run past their timeout, a few are retried,
# cancelled, or need a whole worker; now and then a batch arrives that has to queue.
job_stream() {
    local tenants=("$@") n=0 tenant kind id token
    RANDOM=42
    while :; do
        n=$((n + 1))
        tenant=${tenants[RANDOM % ${#tenants[@]}]}
        kind=$((RANDOM % 20))
        case $kind in
            [0-9])    set -- --cpu-m 250 -- "sleep 0.$((RANDOM % 8 + 1))" ;;
            1[0-2])   set -- --cpu-m 1000 --name slow -- "sleep $((RANDOM % 4 + 2))" ;;
            1[34])    set -- --cpu-m 250 --name flaky -- "sleep 0.3; exit 3" ;;
            15)       set -- --cpu-m 250 --name retried --retries 1 -- "sleep 0.2; exit 1" ;;
            16)       set -- --cpu-m 250 --name stuck --timeout 2 -- "sleep 30" ;;
            17)       set -- --cpu-m 2000 --memory-mb 3072 --name big -- "sleep 3" ;;
            *)        set -- --cpu-m 100 --priority 10 -- "true" ;;
        esac
        # umbrella's jobs fail more often than the others'
        [ "$tenant" = umbrella ] && [ $((RANDOM % 4)) = 0 ] && set -- --cpu-m 250 -- "exit 2"
        # each tenant with its own token: the token says whose job it is
        token=$run/tenant-$tenant.token
        id=$("$build/hodeictl" --token-file "$token" --json submit "$@" 2>/dev/null \
             | grep -o '"id": *"[0-9]*"' | head -1 | grep -o '[0-9][0-9]*')
        # every 25th job is cancelled right after submission
        [ -n "$id" ] && [ $((n % 25)) = 0 ] && "$build/hodeictl" --token-file "$token" cancel "$id" >/dev/null 2>&1
        # every 60th (about every 15 s, the first after 5 s) brings a batch of ten that needs
        # more CPU than the workers have: the queue builds up and drains
        if [ $((n % 60)) = 20 ]; then
            for b in 1 2 3 4 5 6 7 8 9 10; do
                "$build/hodeictl" --token-file "$token" submit --name batch --cpu-m 1000 -- "sleep 3" >/dev/null 2>&1
            done
        fi
        sleep 0.2
    done
}
# Started through setsid like the rest, so it needs a bash of its own.
export -f job_stream
export build run
start stream bash -c 'job_stream "$@"' job_stream "${tenants[@]}"

# --- watch ---------------------------------------------------------------------------------------

metrics_url=http://127.0.0.1:$nginx_port/api/v1/metrics
prom_url=http://127.0.0.1:$prom_port

# prom_value QUERY: the first sample's value of an instant query, or nothing.
prom_value() {
    curl -fsG --max-time 2 "$prom_url/api/v1/query" --data-urlencode "query=$1" 2>/dev/null \
        | sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p'
}

# human SECONDS: "3.2µs", "0.8ms", "1.2s", or "-" when there is no value yet.  Native
# histograms resolve microseconds: the decisions' quantiles are real figures, not an
# interpolation inside a first bucket of 1 ms.
human() {
    awk -v v="$1" 'BEGIN {
        if (v == "" || v == "NaN") print "-";
        else if (v < 1e-3) printf "%.1fµs\n", v * 1e6;
        else if (v < 1) printf "%.1fms\n", v * 1000; else printf "%.2fs\n", v }'
}

# slowest_job: "JOB of TENANT, 3.1s", the exemplar of the highest job-duration bucket that has
# one in the last minute (Prometheus's exemplar storage), or "-".
slowest_job() {
    curl -fsG --max-time 2 "$prom_url/api/v1/query_exemplars" \
         --data-urlencode 'query=hodei_job_duration_seconds_bucket' \
         --data-urlencode "start=$(($(date +%s) - 60))" --data-urlencode "end=$(date +%s)" \
         2>/dev/null | python3 -c '
import json, sys
try:
    ex = [e for s in json.load(sys.stdin)["data"] for e in s["exemplars"]]
    e = max(ex, key=lambda e: float(e["value"]))
    print("job %s of %s, %.2fs" % (e["labels"]["job_id"], e["labels"]["tenant_id"],
                                   float(e["value"])))
except Exception:
    print("-")'
}

# The summary: the scrape gives the counts, Prometheus the quantiles (recorded by the rules).
summary() {
    local elapsed=$1 scrape latency p95_wait slowest firing q
    scrape=$(curl -fs --max-time 2 "$metrics_url") || { say "[${elapsed}s] scrape of $metrics_url failed"; return; }
    latency=""
    for q in p50 p95 p99; do
        latency="$latency $q $(human "$(prom_value "hodei:scheduling_latency_seconds:${q}_1m")") "
    done
    p95_wait=$(human "$(prom_value 'hodei:queue_wait_time_seconds:p95_5m')")
    slowest=$(slowest_job)
    firing=$(curl -fsG --max-time 2 "$prom_url/api/v1/query" \
                 --data-urlencode 'query=ALERTS{alertstate="firing"}' 2>/dev/null \
             | grep -o '"alertname":"[^"]*"' | cut -d'"' -f4 | sort -u | paste -sd, -)
    awk -v elapsed="$elapsed" -v latency="$latency" -v p95w="$p95_wait" -v slowest="$slowest" \
        -v firing="${firing:-none}" '
        function label(name,   s) {
            if (match($0, name "=\"[^\"]*\"")) { s = substr($0, RSTART, RLENGTH); sub(/^[^"]*"/, "", s); sub(/"$/, "", s); return s }
            return ""
        }
        /^#/ { next }
        { v = $NF }
        /^hodei_jobs_submitted_total\{/  { t = label("tenant_id"); sub_[t] += v; seen[t] = 1 }
        /^hodei_jobs_completed_total\{/  { t = label("tenant_id"); ok[t] += v; seen[t] = 1 }
        /^hodei_jobs_failed_total\{/     { t = label("tenant_id"); bad[t] += v; seen[t] = 1; err[label("error_type")] += v }
        /^hodei_queue_size /             { queue = v }
        /^hodei_jobs_running /           { running = v }
        /^hodei_workers_healthy /        { healthy = v }
        /^hodei_workers_total /          { total = v }
        END {
            printf "[%4ss] queue %d  running %d  workers %d/%d healthy  alerts firing: %s\n",
                   elapsed, queue, running, healthy, total, firing
            printf "        scheduling latency%s(native histogram, last 1m)\n", latency
            printf "        p95 queue wait %s (last 5m)  slowest recent job: %s\n", p95w, slowest
            printf "        %-10s %9s %9s %7s\n", "tenant", "submitted", "succeeded", "failed"
            n = 0; for (t in seen) names[++n] = t
            for (i = 2; i <= n; i++) for (j = i; j > 1 && names[j-1] > names[j]; j--) { x = names[j]; names[j] = names[j-1]; names[j-1] = x }
            for (i = 1; i <= n; i++) printf "        %-10s %9d %9d %7d\n", names[i], sub_[names[i]], ok[names[i]], bad[names[i]]
            s = ""; for (e in err) if (err[e] > 0) s = s sprintf(" %s=%d", e, err[e])
            if (s != "") printf "        failures by type:%s\n", s
        }' <<<"$scrape"
}

say ""
say "Hodei demo is starting: hodei-scheduler, nginx with the Hodei module, $workers workers,"
say "Prometheus, and a job stream for tenants ${tenants[*]}."
say "  metrics (what Prometheus scrapes)  $metrics_url"
say "  scheduler API through nginx        http://127.0.0.1:$nginx_port/api/v1/jobs   (a token is needed:)"
say "                                     HODEI_TOKEN=\$(cat $run/admin.token) build/hodeictl list"
say "  tokens (admin, worker, tenants)    $run/*.token"
say "  Prometheus                         $prom_url/graph?g0.expr=sum+by+(tenant_id)+(rate(hodei_jobs_completed_total%5B1m%5D))&g0.tab=0"
say "  alerts and rules                   $prom_url/alerts   $prom_url/rules"
say "  logs                               $run/logs"
if [ "$duration" -gt 0 ]; then say "Runs for ${duration}s (Ctrl-C stops it earlier)."; else say "Ctrl-C stops everything."; fi
say ""

started=$SECONDS
ready=0
next_summary=0
while :; do
    elapsed=$((SECONDS - started))
    [ "$duration" -gt 0 ] && [ "$elapsed" -ge "$duration" ] && break
    for name in "${!pid_of[@]}"; do
        alive "$name" || fail "$name exited unexpectedly" "$name"
    done
    if [ $ready = 0 ]; then
        # Warm-up: ready once Prometheus has scraped, evaluated the rules and has a p95.
        up_workers=$(prom_value 'hodei_workers_healthy')
        p95=$(prom_value 'hodei:scheduling_latency_seconds:p95_5m')
        if [ -n "$p95" ] && [ "$p95" != NaN ]; then
            ready=1
            [ -t 1 ] && printf '\r\033[K'
            say "demo: ready after ${elapsed}s: Prometheus has scraped nginx and evaluated the rules."
        else
            line="warming up (${elapsed}s): scheduler up, nginx up, workers healthy: ${up_workers:-?}/$workers, waiting for Prometheus's first quantiles..."
            if [ -t 1 ]; then printf '\r\033[K%s' "$line"; elif [ $((elapsed % 5)) = 0 ]; then say "$line"; fi
        fi
        sleep 1
        continue
    fi
    if [ "$elapsed" -ge "$next_summary" ]; then
        summary "$elapsed"
        next_summary=$((elapsed + summary_every))
    fi
    sleep 1
done
say "demo: ${duration}s are up."
exit 0
