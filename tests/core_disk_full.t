#!/usr/bin/perl
# A full disk (DESIGN §10): the daemon's state directory is a 4 MiB tmpfs in a mount namespace
# of its own (held by a process of this test, so that it outlives a daemon killed with
# SIGKILL and vanishes with the test).  While the disk is full every change is answered 503
# with a JSON error and changes nothing (jobs, workers, the exposition), reads keep working,
# the store says so once; once space returns the daemon commits again by itself, and after a
# SIGKILL it comes back with exactly the jobs that were answered 201.
use strict;
use warnings;
use Errno qw(ENOSPC);
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;

plan skip_all => 'a size-limited tmpfs in a private mount namespace needs root' if $> != 0;
for my $need (qw(unshare nsenter)) {
    plan skip_all => "$need (util-linux) is missing"
        unless grep { -x "$_/$need" } split /:/, "$ENV{PATH}:/usr/bin:/bin";
}

my $port = $ENV{HODEI_TEST_DISK_FULL_PORT} || 18640;
my $state = "$TMP/state";
mkdir $state or die "$state: $!";
my $holder = spawn("$TMP/holder.log", 'unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                   "mount -t tmpfs -o size=4m,mode=0700 tmpfs $state && exec sleep 3600");
my $inside = "/proc/$holder/root$state";     # the tmpfs, as the daemon sees it
ok(wait_for(10, sub { my @in = stat $inside; my @out = stat $state;
                      @in && $in[0] != $out[0] }), 'the state directory is a tmpfs of its own')
    or BAIL_OUT('no tmpfs: ' . slurp("$TMP/holder.log"));

my $d = start_daemon({ as => ['nsenter', '-t', $holder, '-m', '--wd=' . root(), '--'] }, $port,
                     '--state-dir', $state, qw(--publish-interval-ms 50));
sub show { my ($v) = @_; ref $v ? to_json($v) : ($v // 'undef') }
sub count_log { my ($re) = @_; scalar(() = slurp($d->{log}) =~ /$re/mg) }

my %answered;                                 # job name => id, for every 201
sub submit {
    my ($name, $size) = @_;
    my ($s, $j) = call($d, 'POST', '/jobs', { tenant_id => 'acme', name => $name,
                                              command => 'x' x ($size // 10) });
    $answered{$name} = $j->{id} if $s == 201;
    return ($s, $j);
}

submit("ok-$_") for 1 .. 5;
my ($s) = call($d, 'POST', "/jobs/$answered{'ok-1'}/cancel");
is($s, 200, 'jobs are submitted, one cancelled');

# the disk fills up: a file takes all that is left, then 4 KiB commands take what the store
# had in hand, until a commit fails
open(my $filler, '>', "$inside/filler") or die "$inside/filler: $!";
my $block = "\0" x 65536;
1 while syswrite($filler, $block);
is($! + 0, ENOSPC, 'the filler took every free byte');
close $filler;
my ($first, $reply);
for my $n (1 .. 2000) {
    ($first, $reply) = submit("fill-$n", 4000);
    last if $first != 201;
}
is($first, 503, 'a submission the store cannot commit: 503') or diag(show($reply));
is($reply->{error}, 'store_unavailable', '... store_unavailable') or diag(show($reply));
like($reply->{detail}, qr/full/i, '... saying why');

# state of everything a client can see but the store's own families
sub state_of {
    my (undef, $jobs) = call($d, 'GET', '/jobs?limit=1000');
    my (undef, $workers) = call($d, 'GET', '/workers');
    settle($d);
    (my $m = metrics($d)) =~ s/^hodei_store_.*\n//mg;
    return { jobs => to_json($jobs), workers => to_json($workers), metrics => $m };
}
my $before = state_of();
my @statuses;
push @statuses, (submit("full-$_"))[0] for 1 .. 10;
push @statuses, (call($d, 'POST', "/jobs/$answered{'ok-2'}/cancel"))[0];
push @statuses, (call($d, 'POST', '/workers', { worker_id => 'w-full', cpu_m => 1, memory_mb => 1 }))[0];
is_deeply(\@statuses, [(503) x 12], 'while full, submissions, a cancel and a registration: 503');
my $after = state_of();
is($after->{$_}, $before->{$_}, "while full, the refusals changed nothing: $_") for qw(jobs workers metrics);
my ($rs, $job) = call($d, 'GET', "/jobs/$answered{'ok-2'}");
is("$rs $job->{state}", '200 queued', 'reads keep working: the job is as it was');
like($after->{metrics}, qr/^hodei_jobs_submitted_total\{tenant_id="acme"\} \d+$/m,
     'and the exposition is served');
settle($d);
ok(sample(metrics($d), 'hodei_store_errors_total{reason="disk_full"}') >= 13,
   'every failed commit is counted: hodei_store_errors_total{reason="disk_full"}');
is(count_log(qr/commit failed, changes are refused until one succeeds: database or disk is full/), 1,
   'the store logs the failure once');

# space comes back
unlink "$inside/filler" or die "unlink: $!";
my ($back) = submit('after-1');
is($back, 201, 'once space returns, the next change commits');
is(count_log(qr/commits succeed again/), 1, 'the store says so once');
like(slurp($d->{log}), qr/the state store commits again: \d+ changes were refused \(503\)/,
     'with the number of changes it refused');
($s) = call($d, 'POST', "/jobs/$answered{'ok-2'}/cancel");
is($s, 200, 'the cancel goes through now');

# nothing half-written: after a SIGKILL exactly what was answered 201 is there
restart_daemon($d, 'KILL');
my (undef, $all) = call($d, 'GET', '/jobs?limit=1000');
my %stored = map { $_->{name} => $_->{id} } @{ $all->{jobs} };
is_deeply(\%stored, \%answered, sprintf('after a SIGKILL the store holds exactly the %d jobs '
          . 'answered 201, none of those refused', scalar keys %answered))
    or diag(show([sort keys %stored]), show([sort keys %answered]));
is((call($d, 'GET', "/jobs/$answered{'ok-2'}"))[1]{state}, 'cancelled', 'and their last state');
is(stop($d->{pid}, 'TERM'), 0, 'the daemon stops');
is(stop($holder, 'TERM'), 128 + 15, 'the tmpfs goes with its namespace');
done_testing();
