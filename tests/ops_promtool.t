#!/bin/bash
# promtool accepts conf/prometheus.yml, conf/hodei.rules.yml and conf/hodei.native.rules.yml,
# and the rules' unit tests pass (every alert fires and stays silent where it should; recorded
# quantiles match known values).  promtool 2.42 cannot write native histograms into a test:
# tests/ngx_native_prometheus.t tests the native rules against a live Prometheus.
cd "$(dirname "$0")/../conf" || exit 1
echo "1..4"
n=0
check() {
    local name=$1; shift
    local out
    n=$((n + 1))
    if out=$("$@" 2>&1) && grep -q SUCCESS <<<"$out"; then
        echo "ok $n - $name"
    else
        echo "not ok $n - $name"
        sed 's/^/# /' <<<"$out"
    fi
}
check "promtool check config prometheus.yml" promtool check config prometheus.yml
check "promtool check rules hodei.rules.yml" promtool check rules hodei.rules.yml
check "promtool check rules hodei.native.rules.yml" promtool check rules hodei.native.rules.yml
check "promtool test rules hodei.rules.test.yml" promtool test rules hodei.rules.test.yml
