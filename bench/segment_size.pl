#!/usr/bin/perl
# The memory the metrics path costs: an idle default daemon's segment and RSS (goal: segment
# under 256 KiB), then what tenants and workers add to a snapshot and to the segment, up to
# the default caps' 1,000 tenants and 10,000 workers.  Sizes are exact, not timings: one run.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../tests/lib";
use HodeiTest;

my $port = $ENV{HODEI_BENCH_PORT} || 18410;

# Bytes of the snapshot last published in the segment at $path.
sub snapshot_bytes {
    my ($path) = @_;
    my $h = segment_header($path) or die "no segment at $path";
    open my $fh, '<', $path or die "$path: $!";
    sysseek $fh, 128 + ($h->{published} & 0xff) * $h->{slot_size} + 72, 0;
    sysread($fh, my $len, 8) == 8 or die "short read";
    return unpack 'Q<', $len;
}

sub row {
    my ($d, $what) = @_;
    settle($d) or die "the daemon stopped publishing";
    my $h = segment_header($d->{segment});
    printf "%-34s snapshot %9d B | segment %9d B (%d slots of %d B) | daemon RSS %6d kB\n",
        $what, snapshot_bytes($d->{segment}), -s $d->{segment}, $h->{slot_count},
        $h->{slot_size}, rss_kb($d->{pid});
    return snapshot_bytes($d->{segment});
}

print "segment: a default hodei-scheduler (1,000 tenants and 10,000 workers at most)\n";
my $d = start_daemon($port, qw(--heartbeat-timeout-s 3600 --worker-timeout-s 7200));
my $idle = row($d, 'idle');
my $idle_size = -s $d->{segment};
printf "idle segment %d B: %s the 256 KiB goal\n", $idle_size,
    $idle_size < 256 * 1024 ? 'within' : 'OVER';

# tenants appear with their first job (ids of 11 characters, as "tenant-0001")
my $tenants = 0;
sub tenants_up_to {
    my ($n) = @_;
    for my $t ($tenants + 1 .. $n) {
        my ($st) = call($d, 'POST', '/jobs',
                        { tenant_id => sprintf('tenant-%04d', $t), command => 'true' });
        die "submit for tenant $t: $st" unless $st == 201;
    }
    $tenants = $n;
}
# workers register (ids of 12 characters, as "worker-00001")
my $workers = 0;
sub workers_up_to {
    my ($n) = @_;
    for my $w ($workers + 1 .. $n) {
        my ($st) = call($d, 'POST', '/workers',
                        { worker_id => sprintf('worker-%05d', $w), cpu_m => 1, memory_mb => 1 });
        die "register worker $w: $st" unless $st == 201;
    }
    $workers = $n;
}

tenants_up_to(100);
my $t100 = row($d, '100 tenants');
workers_up_to(1000);
my $w1000 = row($d, '100 tenants, 1,000 workers');
tenants_up_to(1000);
workers_up_to(10000);
my $full = row($d, '1,000 tenants, 10,000 workers');
printf "per tenant: %.0f B of snapshot (9 series); per worker: %.0f B (2 series); "
     . "the segment holds 4 snapshots with room to grow\n",
    ($t100 - $idle) / 100, ($w1000 - $t100) / 1000;
stop($d->{pid}) // die "the daemon did not stop";
