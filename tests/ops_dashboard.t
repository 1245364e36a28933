#!/usr/bin/perl
# Runs `make demo` on the test ports, then proves the operations kit against the live stack: every PromQL expression of conf/grafana/hodei.json is valid and returns data (a
# sample that is not NaN); every rule of conf/hodei.rules.yml and conf/hodei.native.rules.yml is
# loaded, evaluates without error and its query is valid.  The demo's Prometheus ingests
# native histograms and, from a second job, the classic buckets: an expression written
# `native or classic` must return data from each side on its own, so both kinds of operator
# are proven served.  That demo runs until the checks are done (however slow the machine), then
# Ctrl-C (SIGINT to its process group) stops it; a second, short one must exit 0 by itself.
# Either must leave no process of its own and no port behind; and the demo must refuse to
# start on a port that is taken.
#
# Ports: HODEI_OPS_PORT_BASE (18300) for nginx, +1 the scheduler, +2 Prometheus.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use HTTP::Tiny;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(sleep time);

my $base = $ENV{HODEI_OPS_PORT_BASE} || 18300;
my ($nginx_port, $api_port, $prom_port) = ($base, $base + 1, $base + 2);
my $duration = 900;         # the first demo: until Ctrl-C
my $patience = 180;         # seconds for each thing the checks wait for
my $run = "$TMP/run";
my $out = "$TMP/demo.out";
my $http = HTTP::Tiny->new(timeout => 5);

# --- the expressions under test ---------------------------------------------------------------

# `native or classic`: the two sides of a quantile that takes a native histogram when there is
# one; the expression itself otherwise.
sub sides {
    my ($expr) = @_;
    my @sides = split /\s+or\s+(?=histogram_quantile\()/, $expr;
    return @sides == 2 && $sides[1] =~ /_bucket\[/ ? @sides : ($expr);
}

my $dashboard = from_json(slurp('conf/grafana/hodei.json') || die "conf/grafana/hodei.json: cannot read\n");
my @panels = map { $_->{type} eq 'row' ? @{ $_->{panels} || [] } : $_ } @{ $dashboard->{panels} };
my @dash_exprs;    # [panel title, expression as Grafana would send it]
my @fixed_ranges;  # range selectors not written [$__rate_interval]
for my $p (@panels) {
    for my $t (@{ $p->{targets} || [] }) {
        push @fixed_ranges, grep { $_ ne '[$__rate_interval]' } $t->{expr} =~ /(\[[^\]]*\])/g;
        (my $e = $t->{expr}) =~ s/\$__rate_interval/1m/g;
        push @dash_exprs, ["dashboard '$p->{title}'", $e];
        my @sides = sides($e);
        push @dash_exprs, ["dashboard '$p->{title}' (native side)", $sides[0]],
                          ["dashboard '$p->{title}' (classic side)", $sides[1]] if @sides == 2;
    }
}
my @expected_rules = qw(
    hodei:scheduling_latency_seconds:p50_5m hodei:scheduling_latency_seconds:p95_5m
    hodei:scheduling_latency_seconds:p99_5m hodei:queue_wait_time_seconds:p50_5m
    hodei:queue_wait_time_seconds:p95_5m hodei:queue_wait_time_seconds:p99_5m
    hodei:http_request_duration_seconds:p50_5m hodei:http_request_duration_seconds:p95_5m
    hodei:http_request_duration_seconds:p99_5m
    HodeiSchedulerDown HodeiMetricsEndpointDown NoHealthyWorkers HighSchedulingLatency
    QueueBacklog HodeiHighJobFailureRate HodeiMetricsLabelOverflow HodeiAuthFailures
    hodei:scheduling_latency_seconds:p50_1m hodei:scheduling_latency_seconds:p95_1m
    hodei:scheduling_latency_seconds:p99_1m hodei:scheduling_latency_seconds:slower_than_100us_5m
    hodei:queue_wait_time_seconds:p50_1m hodei:queue_wait_time_seconds:p99_1m
    hodei:job_duration_seconds:p50_5m hodei:job_duration_seconds:p99_5m
    HodeiSchedulingDecisionsSlow HodeiNativeHistogramsMissing HodeiStoreFailing);


ok(@dash_exprs >= 30 && !@fixed_ranges,
   "dashboard has its panels' expressions (" . scalar(@dash_exprs) . '), every range is $__rate_interval')
    or diag("fixed ranges: @fixed_ranges");
my @vars = @{ $dashboard->{templating}{list} || [] };
ok((grep { $_->{name} eq 'datasource' && $_->{type} eq 'datasource' } @vars)
       && !grep({ ($_->{datasource}{uid} // '') ne '${datasource}' } @panels),
   'every panel uses the $datasource variable');

# --- the demo -------------------------------------------------------------------------------------

sub port_free { !port_open($_[0]) }
for my $p ($nginx_port, $api_port, $prom_port) {
    port_free($p) or BAIL_OUT("port $p is taken; set HODEI_OPS_PORT_BASE");
}

my %env = (HODEI_DEMO_NGINX_PORT => $nginx_port, HODEI_DEMO_API_PORT => $api_port,
           HODEI_DEMO_PROM_PORT => $prom_port, HODEI_DEMO_DIR => $run);
# `make demo DURATION=...` in a session of its own, as typed at a terminal (Ctrl-C reaches the
# whole group).
sub demo {
    my ($dir, $log, $seconds) = @_;
    local @ENV{ keys %env } = values %env;
    local $ENV{HODEI_DEMO_DIR} = $dir;
    delete local @ENV{qw(MAKEFLAGS MAKELEVEL MFLAGS)};    # a fresh make, as a user would type it
    return spawn($log, 'setsid', 'make', '--no-print-directory', 'demo', "DURATION=$seconds");
}
my $demo = demo($run, $out, $duration);
my $demo_status;
sub demo_running {
    $demo_status //= wait_exit($demo, 0);
    return !defined $demo_status;
}
sub demo_output { slurp($out) }

my $started = time;
sleep 0.5 while demo_running() && demo_output() !~ /^demo: ready/m && time - $started < $patience;
ok(demo_output() =~ /^demo: ready/m, 'the demo warms up: Prometheus scrapes nginx and evaluates the rules')
    or diag(demo_output());

my $prom = "http://127.0.0.1:$prom_port";
sub query {
    my ($expr) = @_;
    my $r = $http->post_form("$prom/api/v1/query", { query => $expr });
    my $body = eval { from_json($r->{content}) } || { status => 'error', error => $r->{content} };
    return $body;
}

my $targets = eval { from_json($http->get("$prom/api/v1/targets")->{content}) } || {};
my %active = map { ($_->{labels}{job} => $_) } @{ $targets->{data}{activeTargets} || [] };
ok(keys(%active) == 2 && $active{'hodei-server'} && $active{'hodei-server'}{health} eq 'up'
       && $active{'hodei-server'}{scrapeUrl} eq "http://127.0.0.1:$nginx_port/api/v1/metrics",
   'Prometheus scrapes nginx /api/v1/metrics as job hodei-server')
    or diag(to_json(\%active));
ok($active{'hodei-classic'} && $active{'hodei-classic'}{health} eq 'up'
       && $active{'hodei-classic'}{scrapeUrl}
          eq "http://127.0.0.1:$nginx_port/api/v1/metrics/classic",
   '... and /api/v1/metrics/classic as job hodei-classic, for the classic buckets')
    or diag(to_json(\%active));

# The rules: their recording rules' `native or classic` sides, and the native recording rules,
# must return data too.
my $rules = eval { from_json($http->get("$prom/api/v1/rules")->{content}) } || {};
my %rule;
for my $g (@{ $rules->{data}{groups} || [] }) {
    $rule{ $_->{name} } = $_ for @{ $g->{rules} };
}
for my $name (sort grep { /^hodei:/ } keys %rule) {
    my @sides = sides($rule{$name}{query});
    if (@sides == 2) {
        push @dash_exprs, ["rule $name (native side)", $sides[0]],
                          ["rule $name (classic side)", $sides[1]];
    } elsif ($rule{$name}{query} !~ /_bucket\[/) {                # a native rule
        push @dash_exprs, ["rule $name", $rule{$name}{query}];
    }
}

# Every dashboard expression must be valid now and return data before the demo ends (some
# need a job to have finished, failed or waited first).
my (%valid, %data);
while (1) {
    for my $i (0 .. $#dash_exprs) {
        next if $data{$i};
        my $r = query($dash_exprs[$i][1]);
        $valid{$i} = $r->{status} eq 'success' ? 1 : $r->{error} // 'error';
        # data: at least one sample that is a number (a quantile of no observations is NaN)
        $data{$i} = $r->{status} eq 'success' && grep { $_->{value}[1] ne 'NaN' } @{ $r->{data}{result} };
    }
    last if keys(%data) == grep({ $_ } values %data) && keys(%data) == @dash_exprs;
    last if !demo_running() || time - $started > $patience;
    sleep 1;
}
for my $i (0 .. $#dash_exprs) {
    my ($title, $e) = @{ $dash_exprs[$i] };
    ok($valid{$i} && $valid{$i} eq '1', "$title: valid: $e")
        or diag($valid{$i});
    ok($data{$i}, "$title: returns data: $e");
}

ok(keys(%rule) == @expected_rules, 'Prometheus loaded the ' . scalar(@expected_rules)
   . ' rules of conf/hodei.rules.yml and conf/hodei.native.rules.yml')
    or diag(join(' ', sort keys %rule));
for my $name (@expected_rules) {
    my $r = $rule{$name};
    ok($r && $r->{health} eq 'ok', "rule $name evaluates without error")
        or diag($r ? $r->{lastError} : 'not loaded');
    my $q = $r ? query($r->{query}) : { status => 'missing' };
    ok($q->{status} eq 'success', "rule $name: its query is valid")
        or diag($q->{error});
}

# --- the end ------------------------------------------------------------------------------------

# the summaries come every 5 s once it is warm; the exemplars once Prometheus stored some
my $figure = qr/[\d.]+(?:µs|ms|s)/;
ok(wait_for($patience, sub { demo_output() =~ /^\s+acme\s+\d+\s+\d+\s+\d+$/m }),
   'the demo prints live summaries with jobs per tenant')
    or diag(demo_output());
ok(wait_for($patience, sub { demo_output() =~ /scheduling latency p50 $figure +p95 $figure +p99 $figure .*native/ }),
   'it prints p50, p95 and p99 scheduling latency from the native histogram');
like(demo_output(), qr/^\s+scheduling latency p50 [\d.]+µs/m,
     '... at microsecond resolution (a decision takes microseconds)');
ok(wait_for($patience, sub { demo_output() =~ /slowest recent job: job \d+ of \w+, [\d.]+s/ }),
   'it names the slowest recent job, from the exemplars Prometheus stored')
    or diag(demo_output());
kill 'INT', -$demo;
ok(wait_for(60, sub { !demo_running() }) && $demo_status == 130, 'Ctrl-C stops the demo (exit 130)')
    or diag(defined $demo_status ? "status $demo_status\n" . demo_output() : 'still running');

# Whatever carries HODEI_DEMO_RUN=$dir in its environment is the demo's.
sub left_of {
    my ($dir) = @_;
    my @left;
    for my $proc (glob '/proc/[0-9]*') {
        open my $fh, '<', "$proc/environ" or next;
        local $/ = "\0";
        while (my $e = <$fh>) {
            chomp $e;
            if ($e eq "HODEI_DEMO_RUN=$dir") { push @left, $proc =~ s{/proc/}{}r; last }
        }
    }
    return @left;
}
sub all_free { port_free($nginx_port) && port_free($api_port) && port_free($prom_port) }
my @left = left_of($run);
ok(!@left && all_free(), 'no process of the demo is left running, its ports are free again')
    or diag("left: @left");

# a short one ends by itself
my $short = demo("$TMP/short", "$TMP/short.out", 3);
my $short_status;
ok(wait_for($patience, sub { defined($short_status //= wait_exit($short, 0)) }) && $short_status == 0,
   'make demo DURATION=3 exits 0 by itself')
    or diag(defined $short_status ? "status $short_status\n" . slurp("$TMP/short.out") : 'still running');
@left = left_of("$TMP/short");
ok(!@left && all_free(), '... leaving no process and no port behind')
    or diag("left: @left");

# A taken port: the demo says so and exits non-zero before starting anything.
my $blocker = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $prom_port, Listen => 1, ReuseAddr => 1)
    or die "listen $prom_port: $!";
my $refusal = do {
    local @ENV{ keys %env } = values %env;
    local $ENV{HODEI_DEMO_DIR} = "$TMP/refused";
    `scripts/demo.sh --duration 5 2>&1`;
};
my $status = $?;
close $blocker;
ok($status != 0 && $refusal =~ /127\.0\.0\.1:$prom_port .*already in use/ && !-e "$TMP/refused",
   'a taken port is reported and nothing is started')
    or diag("status $status: $refusal");

done_testing();
