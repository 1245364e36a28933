#!/usr/bin/perl
# A daemon that cannot publish says so once, not every interval, and stops its heartbeat, so
# that its old numbers turn stale instead of passing for current ones; once it can publish
# again it says so once, and the snapshot it publishes holds everything that happened
# meanwhile.  Growth is made impossible by taking away the write permission of the segment's
# directory (the daemon runs as nobody when the suite runs as root).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use File::Temp qw(tempdir);
use Test::More;
use Time::HiRes qw(sleep time);

my $port = $ENV{HODEI_TEST_PUBLISH_PORT} || 18440;
my @as_other = $> == 0 ? qw(setpriv --reuid=nobody --regid=nogroup --clear-groups) : ();
plan skip_all => 'nobody cannot run build/hodei-scheduler from this checkout'
    if @as_other && system(@as_other, 'test', '-x', 'build/hodei-scheduler') != 0;

my $dir = tempdir('hodei-publish-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;
mkdir "$dir/seg" or die;
chmod 0777, "$dir/seg";
# the daemon's own tokens file, owned by the user it runs as
my $tokens_file = "$dir/tokens";
my $tokens = make_tokens($tokens_file, [admin => 'admin']);
chown scalar(getpwnam('nobody')), scalar(getgrnam('nogroup')), $tokens_file or die "chown: $!"
    if @as_other;
my $d = start_daemon({ segment => "$dir/seg/segment", as => \@as_other }, $port,
                     '--tokens', $tokens_file, qw(--publish-interval-ms 50
                     --heartbeat-timeout-s 3600 --worker-timeout-s 7200));
$d->{token} = $tokens->{admin};
ok(settle($d), 'the daemon publishes');

sub count_lines { my ($re) = @_; return scalar(() = slurp($d->{log}) =~ /$re/mg) }
sub age { my $h = segment_header($d->{segment}); return $h ? time - $h->{heartbeat_ns} / 1e9 : -1 }

# 2,000 workers outgrow the first segment; no larger file can be made beside it
chmod 0555, "$dir/seg" or die;
for my $i (1 .. 2000) {
    my ($st) = call($d, 'POST', '/workers', { worker_id => "w$i", cpu_m => 1, memory_mb => 1 });
    die "register w$i: $st" unless $st == 201;
}
my $deadline = time + 120;
sleep 0.02 until age() > 1 || time > $deadline;
cmp_ok(age(), '>', 1, 'no heartbeat while publishing fails: the segment turns stale')
    or diag(slurp($d->{log}));
is(count_lines(qr/metrics not published: .*Permission denied/), 1,
   'the failure is logged once, though tried every 50 ms');
like(scalar `build/hodei-metrics --stale-after 0.5 $d->{segment}`, qr/^hodei_scheduler_up 0$/m,
     'readers see the scheduler down');
my $last = sample(scalar `build/hodei-metrics $d->{segment}`, 'hodei_workers_total') // -1;
ok($last >= 0 && $last < 2000,
   "the segment still holds the last snapshot that fitted ($last workers)");

chmod 0777, "$dir/seg" or die;
ok(settle($d), 'publishing again once the directory is writable');
is(count_lines(qr/metrics published again/), 1, 'the recovery is logged once');
is(count_lines(qr/metrics not published/), 1, 'and the failure still only once');
my $text = metrics($d);
is(sample($text, 'hodei_workers_total'), 2000, 'nothing was lost: all 2,000 workers');
my @series = $text =~ /^hodei_cpu_usage_percent\{/mg;
is(scalar @series, 2000, 'each with its series');
is(stop($d->{pid}, 'TERM'), 0, 'the daemon exits 0');
done_testing();
