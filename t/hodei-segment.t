# A segment that is missing, damaged, of another version or stale: the scrape still answers
# 200 with nginx's own families and hodei_scheduler_up 0, serves none of the daemon's
# samples, logs why, and nginx keeps running.
use strict;
use warnings;

use FindBin ();
use POSIX ();
use Test::Nginx::Socket 'no_plan';
use lib $FindBin::Bin;
use HodeiSpec;

# The families and their sources, from their one definition.
my @families = schema_families();
my @all = map { $_->[0] } @families;
my @daemon = map { $_->[0] } grep { $_->[2] eq 'DAEMON' } @families;
die "unexpected schema" if @daemon < 10;
my $daemon_sample = join '|', map { quotemeta } @daemon;

# What the scrape shows of the scheduler, in one line.
sub summary {
    my ($body) = @_;
    my $helps = () = $body =~ /^# HELP hodei_/mg;
    my $types = () = $body =~ /^# TYPE hodei_/mg;
    my $samples = () = $body =~ /^(?:$daemon_sample)(?:_bucket|_sum|_count)?[{ ]/mg;
    my ($up) = $body =~ /^hodei_scheduler_up (\S+)$/m;
    my ($age) = $body =~ /^hodei_metrics_snapshot_age_seconds (\S+)$/m;
    my $http = $body =~ /^hodei_http_request_duration_seconds_count \d+$/m ? 'yes' : 'no';
    return sprintf "families=%s daemon_samples=%s up=%s age=%s http=%s\n",
        ($helps == @all && $types == @all ? 'all' : "$helps/$types"),
        ($samples ? 'some' : 'none'), $up // 'none',
        (!defined $age ? 'none' : $age > 3000 ? 'old' : 'fresh'), $http;
}

# Overwrites bytes of the segment at an offset (the file keeps its inode and size).
sub poke {
    my ($offset, $bytes) = @_;
    open my $fh, '+<', $seg or die "$seg: $!";
    binmode $fh;
    sysseek $fh, $offset, 0 or die;
    syswrite($fh, $bytes) == length $bytes or die;
    close $fh;
}

sub peek {
    my ($offset, $len) = @_;
    open my $fh, '<', $seg or die "$seg: $!";
    binmode $fh;
    sysseek $fh, $offset, 0 or die;
    my $buf = '';
    sysread $fh, $buf, $len;
    return $buf;
}

# Replaces the segment with a file holding these bytes (a new inode, as a daemon would).
sub replace_with {
    my ($bytes) = @_;
    rmdir $seg;                    # what an earlier block may have left
    open my $fh, '>', "$seg.tmp" or die "$seg.tmp: $!";
    binmode $fh;
    print $fh $bytes;
    close $fh;
    rename "$seg.tmp", $seg or die "rename: $!";
}

# Header fields (shm/hodei_segment.h): version u32 @8, slot_size u64 @24,
# published u64 @64, heartbeat_ns i64 @72; a slot's payload starts 128 bytes in.
sub payload_offset {
    my $slot_size = unpack 'Q<', peek(24, 8);
    my $slot = unpack('Q<', peek(64, 8)) & 0xff;
    return 128 + $slot * $slot_size + 128;
}

# Every block scrapes once and compares the summary; unless it says otherwise, with the HTTP zone.
block_defaults(
    http_config => "hodei_segment $seg;\nhodei_http_zone hodei_http 1m;\n",
    config => "location = /api/v1/metrics { hodei_metrics; }\n",
    request => "GET /api/v1/metrics\n");
add_block_preprocessor(sub { $_[0]->set_value(response_body_filters => [\&main::summary]) });

run_tests();

__DATA__

=== TEST 1: a valid, fresh segment: the daemon's samples and hodei_scheduler_up 1
--- init
main::fill()
--- response_body
families=all daemon_samples=some up=1 age=fresh http=yes
--- no_error_log
[error]



=== TEST 2: no segment file
--- init
unlink $main::seg; rmdir $main::seg
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment file does not exist; scheduler reported down



=== TEST 3: not a Hodei segment (bad magic)
--- init
main::replace_with("this is not a hodei segment\n" x 200)
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment magic is wrong (not a Hodei segment); scheduler reported down



=== TEST 4: another layout version
--- init
main::fill(); main::poke(8, pack 'L<', 99)
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment layout version is not supported: the segment has version 99, this reader 2 (hodei-scheduler and the reader come from different releases); scheduler reported down



=== TEST 5: a file shorter than a header
--- init
main::fill(); truncate $main::seg, 64 or die
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment file is shorter than its header; scheduler reported down



=== TEST 6: a file cut short of the size its header claims
--- init
main::fill(); truncate $main::seg, (-s $main::seg) / 2 or die
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment sizes or slot count are inconsistent; scheduler reported down



=== TEST 7: an empty file
--- init
main::replace_with("")
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment file is shorter than its header; scheduler reported down



=== TEST 8: garbage in the published snapshot: the header is fine, the payload is not
--- init
main::fill(); main::poke(main::payload_offset(), "\xa5" x 64)
--- response_body
families=all daemon_samples=none up=0 age=fresh http=yes
--- error_log
snapshot payload failed validation



=== TEST 9: a published slot index that does not exist
--- init
main::fill(); main::poke(64, pack 'Q<', (unpack('Q<', main::peek(64, 8)) & ~0xff) | 200)
--- response_body
families=all daemon_samples=none up=0 age=fresh http=yes
--- error_log
published slot index is out of range; scheduler reported down



=== TEST 10: a stale heartbeat: the daemon's numbers are not served as current
--- init
main::fill(); main::poke(72, pack 'q<', (time() - 3600) * 1_000_000_000)
--- response_body
families=all daemon_samples=none up=0 age=old http=yes
--- error_log eval
qr/stale, last heartbeat 3\d\d\d\.\d+ s ago \(hodei_stale_after 10000 ms\); scheduler reported down/



=== TEST 11: hodei_stale_after decides what is stale
--- http_config eval
"hodei_segment $main::seg;\nhodei_stale_after 2h;\n"
--- init
main::fill(); main::poke(72, pack 'q<', (time() - 3600) * 1_000_000_000)
--- response_body
families=all daemon_samples=some up=1 age=old http=no
--- no_error_log
[error]



=== TEST 12: a FIFO at the path (anyone may write /dev/shm): refused at once, never waited on
--- init
unlink $main::seg; rmdir $main::seg; POSIX::mkfifo($main::seg, 0666) or die "mkfifo: $!"
--- timeout: 5
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment path is not a regular file (a link, FIFO, directory or device); scheduler reported down



=== TEST 13: a symbolic link at the path, even to a valid segment, is not followed
--- init
main::fill(); rename $main::seg, "$main::seg.real" or die;
symlink "$main::seg.real", $main::seg or die
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment path is not a regular file (a link, FIFO, directory or device); scheduler reported down



=== TEST 14: a directory at the path
--- init
unlink $main::seg; rmdir $main::seg; mkdir $main::seg or die
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment path is not a regular file (a link, FIFO, directory or device); scheduler reported down



=== TEST 15: a segment others may write cannot be trusted
--- init
main::fill(); chmod 0666, $main::seg or die
--- response_body
families=all daemon_samples=none up=0 age=none http=yes
--- error_log
segment file is writable by others; scheduler reported down
