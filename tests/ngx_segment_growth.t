#!/usr/bin/perl
# A segment sized by what it holds: a default daemon starts with a small segment, and as
# workers register (a handful, then up to 10,000) it publishes into larger files that replace
# it, while nginx scrapes it without pause.  Every scrape is valid and shows the scheduler
# up, the worker count a scrape shows never goes back, each checkpoint shows exactly what was
# registered (no publish lost), generations only rise across files, and no old file is left
# behind or held open.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use HodeiExposition;
use POSIX ();
use Test::More;

my $port = $ENV{HODEI_TEST_GROWTH_PORT} || 18430;
my $nginx_port = $port + 1;
my $url = "http://127.0.0.1:$nginx_port/api/v1/metrics";
schema();                                        # read once, before the scraper forks

# Default caps (1,000 tenants, 10,000 workers); registered workers stay, heartbeat or not.
my $d = start_daemon($port, qw(--publish-interval-ms 50 --heartbeat-timeout-s 3600
                               --worker-timeout-s 7200));
my $seg = $d->{segment};
ok(settle($d), 'the daemon publishes');
my $first = segment_header($seg);
my $idle_size = -s $seg;
cmp_ok($idle_size, '<', 256 * 1024, "an idle default daemon's segment is small ($idle_size bytes)");

my $nginx = start_nginx(port => $nginx_port, http => <<"HTTP");
    hodei_segment $seg;
    server {
        listen 127.0.0.1:$nginx_port;
        location = /api/v1/metrics { hodei_metrics; }
    }
HTTP

# The scraper: one scrape after another until told to stop; a line per scrape.
my $scrapes = "$TMP/scrapes.txt";
my $scraper = fork // die "fork: $!";
if ($scraper == 0) {
    my $stop = 0;
    $SIG{TERM} = sub { $stop = 1 };
    my $http = HTTP::Tiny->new(timeout => 10);
    open my $out, '>', $scrapes or POSIX::_exit(1);
    $out->autoflush(1);
    until ($stop) {
        my $r = $http->get($url);
        my $problem = $r->{status} == 200 ? exposition_problem($r->{content})
                                          : "status $r->{status}";
        my $workers = $r->{content} =~ /^hodei_workers_total (\d+)$/m ? $1 : '-';
        print $out join(' ', scheduler_up($r->{content}) // '-', $workers, $problem // 'ok'), "\n";
    }
    POSIX::_exit(0);
}

sub register {
    my ($from, $to) = @_;
    for my $i ($from .. $to) {
        my ($st) = call($d, 'POST', '/workers', { worker_id => sprintf('worker-%05d', $i),
                                                  cpu_m => 1000, memory_mb => 1024 });
        die "registering worker $i: $st" unless $st == 201;
    }
}

my ($registered, @files) = (0);
for my $n (5, 50, 500, 2_000, 5_000, 10_000) {
    register($registered + 1, $n);
    $registered = $n;
    ok(settle($d), "$n workers: published");
    my $h = segment_header($seg);
    my @st = stat $seg;
    push @files, { workers => $n, size => $st[7], ino => $st[1], generation => $h->{generation} };
    my $text = http_get($url)->{content};
    my @series = $text =~ /^hodei_cpu_usage_percent\{worker_id="worker-\d{5}"\} /mg;
    is(sample($text, 'hodei_workers_total') . ' ' . scalar(@series), "$n $n",
       "$n workers: the scrape shows all of them (segment $st[7] bytes)");
}
kill 'TERM', $scraper;
is(wait_exit($scraper, 60), 0, 'the scraper stopped');

note(join "\n", map { "$_->{workers} workers: $_->{size} bytes, inode $_->{ino}, "
                      . "generation $_->{generation}" } @files);
my @sizes = map { $_->{size} } @files;
ok(!grep({ $sizes[$_] < $sizes[$_ - 1] } 1 .. $#sizes), 'the segment never shrank');
cmp_ok($sizes[-1], '>', 4 * $idle_size, 'it grew with the workers');
my %inodes = map { $_->{ino} => 1 } @files;
cmp_ok(scalar keys %inodes, '>', 1, 'by replacing its file (' . scalar(keys %inodes) . ' files)');
my @gens = ($first->{generation}, map { $_->{generation} } @files);
ok(!grep({ $gens[$_] <= $gens[$_ - 1] } 1 .. $#gens), "generations rose across files (@gens)");
is(segment_header($seg)->{birth_id}, $first->{birth_id}, 'one daemon: the birth id stayed');

my @lines = split /\n/, slurp($scrapes);
cmp_ok(scalar @lines, '>', 10, scalar(@lines) . ' scrapes while the segment grew');
my @bad = grep { !/^1 \d+ ok$/ } @lines;
is(scalar @bad, 0, 'every scrape a valid exposition with the scheduler up')
    or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
my @seen = map { /^\S+ (\d+)/ ? $1 : -1 } @lines;
my @back = grep { $seen[$_] < $seen[$_ - 1] } 1 .. $#seen;
is(scalar @back, 0, 'the worker count a scrape shows never went back')
    or diag("went back at scrape $back[0]: $seen[$back[0] - 1] -> $seen[$back[0]]");

# nothing of the old files stays: not beside the segment, not mapped or open anywhere
my @beside = grep { $_ ne $seg } glob("$seg*");
is_deeply(\@beside, [], 'no temporary or old file beside the segment');
my $held = 0;
for my $pid ($d->{pid}, split ' ', `pgrep -P $nginx`) {
    $held += grep { /\Q$seg\E.*\(deleted\)/ } split /\n/, slurp("/proc/$pid/maps");
    $held += grep { (readlink($_) // '') =~ /\Q$seg\E.*\(deleted\)/ } glob("/proc/$pid/fd/*");
}
is($held, 0, 'no process holds a replaced segment file');
unlike(slurp($d->{log}), qr/metrics not published/, 'the daemon never failed to publish');
is(stop($d->{pid}, 'TERM'), 0, 'the daemon exits 0');
done_testing();
