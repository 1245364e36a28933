#!/usr/bin/perl
# A segment of another layout version is never read, in either direction: the previous
# release's hodei-shm-fill and hodei-metrics (layout 1, built here from the commit before
# layout 2) against this release's reader, nginx module and writer.  Each side reports the
# scheduler down, or exits 1, and says why; no sample of the other version is served.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;

my $port = $ENV{HODEI_TEST_VERSION_PORT} || 18433;

# The commit that made the layout version 2, and the tree just before it.
my $v2 = `git log -1 --format=%H -S'HODEI_SEG_VERSION    2u' -- shm/hodei_segment.h 2>/dev/null`;
chomp $v2;
plan skip_all => 'needs the git history of this repository (the previous layout\'s sources)'
    unless $v2 && system("git cat-file -e $v2^:shm/hodei_segment.h 2>/dev/null") == 0;

my $old = "$TMP/v1";
mkdir $old or die;
is(system("git archive $v2^ shm | tar -x -C $old"), 0, 'the previous release\'s shm/ sources');
like(`grep -h 'define HODEI_SEG_VERSION' $old/shm/hodei_segment.h`, qr/\b1u\b/,
     'they read and write layout version 1');
my $urcu = `pkg-config --cflags liburcu 2>/dev/null` // '';
chomp $urcu;
my @lib = grep { !/_main\.c$|hodei_shm_fill\.c$/ } glob("$old/shm/*.c");
for my $tool (['hodei-metrics', 'hodei_metrics_main.c'], ['hodei-shm-fill', 'hodei_shm_fill.c']) {
    my ($name, $main) = @$tool;
    is(system("cc -O1 -std=c11 -D_GNU_SOURCE -pthread $urcu -I$old/shm -o $old/$name "
              . "$old/shm/cli/$main @lib -lm"), 0, "the previous $name builds");
}

# ---- an old segment, this release's readers -----------------------------------------------------

my $old_seg = "$TMP/old-segment";
is(system("$old/hodei-shm-fill $old_seg"), 0, 'the previous hodei-shm-fill writes a segment');
is(segment_header($old_seg)->{version}, 1, 'of layout version 1');
my ($status, $out, $err) = run('build/hodei-metrics', $old_seg);
my $why = 'segment layout version is not supported: the segment has version 1, this reader 2 '
        . '(hodei-scheduler and the reader come from different releases)';
is($status, 1, 'hodei-metrics exits 1 on it');
is($out, '', '... and prints no sample');
like($err, qr/\Q$why\E/, '... and says which versions meet');

my $nginx_dir = "$TMP/nginx";
my $nginx = start_nginx(dir => $nginx_dir, port => $port, http => <<"HTTP");
    hodei_segment $old_seg;
    server {
        listen 127.0.0.1:$port;
        location = /api/v1/metrics { hodei_metrics; hodei_native_histograms on; }
    }
HTTP
my $scrape = http_get("http://127.0.0.1:$port/api/v1/metrics")->{content} // '';
like($scrape, qr/^hodei_scheduler_up 0$/m, 'nginx reports the scheduler down');
unlike($scrape, qr/^hodei_(?:jobs_scheduled_total|scheduling_latency_seconds_bucket)\b/m,
       '... with none of the old segment\'s samples');
my $log = slurp("$nginx_dir/logs/error.log");
like($log, qr/hodei_segment "\Q$old_seg\E": \Q$why\E; scheduler reported down/,
     '... and logs why, once') or diag($log);
http_get("http://127.0.0.1:$port/api/v1/metrics");
is(scalar(() = slurp("$nginx_dir/logs/error.log") =~ /layout version/g), 1,
   'a second scrape logs nothing new');

# ---- this release's segment, the old reader ------------------------------------------------------

my $new_seg = "$TMP/new-segment";
is(system("build/hodei-shm-fill $new_seg"), 0, 'this hodei-shm-fill writes a segment');
is(segment_header($new_seg)->{version}, 2, 'of layout version 2');
($status, $out, $err) = run("$old/hodei-metrics", $new_seg);
is($status, 1, 'the previous hodei-metrics exits 1 on it');
is($out, '', '... and prints no sample');
like($err, qr/segment layout version is not supported/, '... and says so') or diag($err);

stop($nginx);
done_testing();
