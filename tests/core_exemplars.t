#!/usr/bin/perl
# A job id behind every slow bucket, end to end: hodei-scheduler, a real hodei-worker agent,
# nginx with the module, and Debian's Prometheus with exemplar storage.  Jobs of known
# lengths run (two of 3 s that each need the whole worker, so the second and the short jobs
# behind it wait about 3 s); Prometheus stores the exemplars of the OpenMetrics scrape, and
# every job id /api/v1/query_exemplars returns for job duration and queue wait is resolved
# with `hodeictl get`: it is a job of the exemplar's tenant that took exactly that long, in
# that bucket, and the slowest bucket names a 3 s job.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;
use Time::HiRes qw(sleep time);

my $base = $ENV{HODEI_TEST_EXEMPLAR_PORT} || 18450;
my ($daemon_port, $nginx_port, $prom_port) = ($base, $base + 1, $base + 2);
my $d = start_daemon($daemon_port, qw(--publish-interval-ms 100));
my $nginx = start_nginx_in_front($d, $nginx_port);
my $url = "http://127.0.0.1:$nginx_port";
my $api = { url => "$url/api/v1", token => $d->{token} };
my $admin = token_file($d->{token});
spawn("$TMP/agent.log", 'build/hodei-worker', '--api', $url, '--token-file',
      token_file($d->{tokens}{worker}), '--id', 'agent', '--cpu-m', 2000, '--memory-mb', 2048,
      '--heartbeat-ms', 200, '--poll-wait', 1);
ok(wait_for(30, sub { my (undef, $w) = call($api, 'GET', '/workers');
                      ref $w && @{ $w->{workers} } == 1 }), 'the agent registered');

open(my $cfg, '>', "$TMP/prometheus.yml") or die;
print $cfg <<"YML";
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: hodei-server
    metrics_path: /api/v1/metrics
    static_configs:
      - targets: ['127.0.0.1:$nginx_port']
YML
close $cfg;
spawn("$TMP/prometheus.log", 'prometheus', "--config.file=$TMP/prometheus.yml",
      "--storage.tsdb.path=$TMP/data", "--web.listen-address=127.0.0.1:$prom_port",
      '--enable-feature=exemplar-storage');
ok(wait_port($prom_port, 30), 'Prometheus listens') or BAIL_OUT(slurp("$TMP/prometheus.log"));

# ---- the jobs ------------------------------------------------------------------------------------

sub submit {
    my ($tenant, $name, $cpu, $command) = @_;
    my ($st, $j) = call($api, 'POST', '/jobs', { tenant_id => $tenant, name => $name,
                                                  cpu_m => $cpu, memory_mb => 10,
                                                  command => $command });
    die "submit: $st " . to_json($j) unless $st == 201;
    return $j->{id};
}
sub state_of { my (undef, $j) = call($api, 'GET', "/jobs/$_[0]"); ref $j ? $j->{state} : '' }

my $slow1 = submit('beta', 'slow', 2000, 'sleep 3');
ok(wait_for(30, sub { state_of($slow1) eq 'running' }), 'the first slow job runs');
my $slow2 = submit('beta', 'slow', 2000, 'sleep 3');
my @fast = map { submit('acme', 'fast', 100, 'true') } 1 .. 4;
ok(wait_for(60, sub { !grep { state_of($_) ne 'succeeded' } $slow1, $slow2, @fast }),
   'every job succeeded');

# ---- what Prometheus keeps, resolved to jobs -----------------------------------------------------

my $now = time;
sub exemplars {
    my ($family) = @_;
    my $r = http_get("http://127.0.0.1:$prom_port/api/v1/query_exemplars?query=${family}_bucket"
                     . '&start=' . int($now - 600) . '&end=' . int($now + 600));
    my @ex;
    for my $series (@{ $r->{success} ? from_json($r->{content})->{data} : [] }) {
        push @ex, { le => $series->{seriesLabels}{le}, %{ $_->{labels} }, value => $_->{value} }
            for @{ $series->{exemplars} };
    }
    return @ex;
}

sub le_num { $_[0] eq '+Inf' ? 9**9**9 : $_[0] + 0 }

sub bucket_of {
    my ($family, $v) = @_;
    my ($def) = grep { $_->{name} eq $family } @{ schema()->{families} };
    my ($le, $lower) = ('+Inf', 0);
    for my $b (@{ $def->{buckets} }) {
        if ($v <= $b) { $le = $b; last }
        $lower = $b;
    }
    return ($le, $lower);
}

# the job as hodeictl shows it, with the admin's token
sub hodeictl_get {
    my ($id) = @_;
    my ($status, $out, $err) = run('build/hodeictl', '--api', $url, '--token-file', $admin,
                                   '--json', 'get', $id);
    return $status == 0 ? eval { from_json($out) } : undef;
}

my %checks = (
    hodei_job_duration_seconds    => sub { $_[0]{finished_at} - $_[0]{started_at} },
    hodei_queue_wait_time_seconds => sub { $_[0]{assigned_at} - $_[0]{submitted_at} });
for my $family (sort keys %checks) {
    my @ex;
    # every job's bucket has its exemplar once Prometheus has scraped after the last one
    my %want_buckets;
    for my $id ($slow1, $slow2, @fast) {
        my $j = hodeictl_get($id) or next;
        $want_buckets{ (bucket_of($family, $checks{$family}->($j)))[0] } = 1;
    }
    wait_for(30, sub {
        @ex = exemplars($family);
        my %have = map { (le_num($_->{le}) => 1) } @ex;
        !grep { !$have{ le_num($_) } } keys %want_buckets
    });
    cmp_ok(scalar(@ex), '>=', scalar(keys %want_buckets),
           "$family: Prometheus returns exemplars of every bucket the jobs fell in ("
           . join(' ', sort keys %want_buckets) . ')') or diag(slurp("$TMP/prometheus.log"));
    my @bad;
    for my $e (@ex) {
        my $j = hodeictl_get($e->{job_id});
        my $took = $j ? $checks{$family}->($j) : undef;
        my ($le, $lower) = defined $took ? bucket_of($family, $took) : ('', 0);
        push @bad, "job $e->{job_id} (le $e->{le}, $e->{value} s): "
                   . ($j ? "tenant $j->{tenant_id}, took $took s" : 'unknown to hodeictl')
            unless $j && $j->{tenant_id} eq $e->{tenant_id} && abs($took - $e->{value}) < 0.01
                   && le_num($e->{le}) == le_num($le);
    }
    is_deeply(\@bad, [], "$family: each exemplar's job, per hodeictl get, is of its tenant and "
                         . 'took its value, in its bucket (' . scalar(@ex) . ' exemplars)');
    my ($slowest) = sort { le_num($b->{le}) <=> le_num($a->{le}) } @ex;
    my $j = $slowest ? hodeictl_get($slowest->{job_id}) : undef;
    my $took = $j ? $checks{$family}->($j) : 0;
    cmp_ok($took, '>=', 2.5, "$family: the slowest bucket (le " . ($slowest->{le} // '-')
           . ') names a job that took 2.5 s or more: '
           . ($j ? "$j->{name} $j->{id} of $j->{tenant_id}, " . sprintf('%.3f s', $took) : 'none'));
    is($j && $j->{name}, 'slow', "$family: ... one of the two 3 s jobs") if $family =~ /duration/;
}

done_testing();
