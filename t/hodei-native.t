# hodei_native_histograms: the protobuf format only where it is on and only for a client that
# prefers it, with its content type; exemplars in OpenMetrics whatever the directive says;
# nginx's gzip filter with the protobuf type; inheritance.
use strict;
use warnings;

use FindBin ();
use IO::Uncompress::Gunzip ();
use Test::Nginx::Socket 'no_plan';
use lib $FindBin::Bin;
use HodeiSpec;

our @Families = schema_families();

# What Prometheus 2.42 sends with --enable-feature=native-histograms.
our $PrometheusNative = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
    . 'encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,'
    . 'application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

# The protobuf wire format, as much of it as a summary needs: (field, wire type, value) of
# each field of a message; a length-delimited value is the raw bytes.
sub varint {
    my ($buf, $pos) = @_;
    my ($v, $shift) = (0, 0);
    while (1) {
        die "varint past the end\n" if $$pos >= length $$buf;
        my $b = ord substr($$buf, $$pos++, 1);
        $v |= ($b & 0x7f) << $shift;
        return $v if $b < 0x80;
        $shift += 7;
    }
}

sub fields {
    my ($msg) = @_;
    my ($pos, @f) = (0);
    while ($pos < length $msg) {
        my $key = varint(\$msg, \$pos);
        my ($field, $wire) = ($key >> 3, $key & 7);
        my $value;
        if ($wire == 0) { $value = varint(\$msg, \$pos) }
        elsif ($wire == 1) { $value = substr($msg, $pos, 8); $pos += 8 }
        elsif ($wire == 2) { my $n = varint(\$msg, \$pos); $value = substr($msg, $pos, $n); $pos += $n }
        else { die "wire type $wire\n" }
        die "a field runs past its message\n" if $pos > length $msg;
        push @f, [$field, $wire, $value];
    }
    return @f;
}

# A summary of a delimited stream of MetricFamily messages: the families in order, then each
# histogram family with its native part (schema present) and how many buckets carry an
# exemplar.
sub summary {
    my ($body) = @_;
    my ($pos, @names, @hist) = (0);
    eval {
        while ($pos < length $body) {
            my $n = varint(\$body, \$pos);
            my $mf = substr($body, $pos, $n);
            die "a family runs past the stream\n" if $pos + $n > length $body;
            $pos += $n;
            my ($name) = map { $_->[2] } grep { $_->[0] == 1 } fields($mf);
            push @names, $name;
            for my $metric (map { $_->[2] } grep { $_->[0] == 4 } fields($mf)) {
                for my $h (map { $_->[2] } grep { $_->[0] == 7 } fields($metric)) {
                    my @hf = fields($h);
                    my $native = grep { $_->[0] == 5 } @hf;
                    my $exemplars = grep { grep { $_->[0] == 3 } fields($_->[2]) }
                                    grep { $_->[0] == 3 } @hf;
                    push @hist, "$name native=" . ($native ? 'yes' : 'no')
                                . " exemplars=$exemplars";
                }
            }
        }
        1;
    } or return "undecodable: $@";
    my $order = join(',', @names) eq join(',', map { $_->[0] } @Families) ? 'schema order'
                                                                         : "order: @names";
    return join("\n", scalar(@names) . " families, $order", @hist) . "\n";
}

sub gunzip_body {
    my ($in) = @_;
    my $out;
    IO::Uncompress::Gunzip::gunzip(\$in => \$out) or return "gunzip failed";
    return $out;
}

our $PB_TYPE = 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; '
             . 'encoding=delimited';
# the daemon's four histograms carry both parts; nginx's HTTP histogram is classic only
our $PB_SUMMARY = scalar(@Families) . " families, schema order\n"
    . "hodei_scheduling_latency_seconds native=yes exemplars=13\n"
    . "hodei_queue_wait_time_seconds native=yes exemplars=11\n"
    . "hodei_http_request_duration_seconds native=no exemplars=0\n"
    . "hodei_job_duration_seconds native=yes exemplars=13\n"
    . "hodei_store_commit_duration_seconds native=yes exemplars=17\n";

block_defaults(
    http_config => "hodei_segment $seg;\nhodei_http_zone hodei_http 1m;\n",
    config => "location = /api/v1/metrics { hodei_metrics; hodei_native_histograms on; }\n",
    init => 'main::fill()',
    request => "GET /api/v1/metrics\n");

no_shuffle();
run_tests();

__DATA__

=== TEST 1: on, and Prometheus asks for protobuf first: delimited MetricFamily messages
--- more_headers eval
"Accept: $main::PrometheusNative"
--- response_headers eval
"Content-Type: $main::PB_TYPE"
--- response_body_filters eval
[\&main::summary]
--- response_body eval
$main::PB_SUMMARY
--- no_error_log
[error]



=== TEST 2: off by default: the same Accept gets OpenMetrics, with every bucket's exemplar
--- config
    location = /api/v1/metrics { hodei_metrics; }
--- more_headers eval
"Accept: $main::PrometheusNative"
--- response_headers
Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8
--- response_body_like eval
qr/^hodei_scheduling_latency_seconds_bucket\{le="0\.001"\} \d+ # \{job_id="\d+",tenant_id="tenant-\d{4}"\} [0-9.e-]+ 1700000\d{3}(?:\.\d+)?\n.*^# EOF\n\z/ms



=== TEST 3: on: text 0.0.4 and OpenMetrics for everyone else, exactly as with it off
--- request eval
["GET /api/v1/metrics", "GET /api/v1/metrics", "GET /api/v1/metrics"]
--- more_headers eval
["", "Accept: text/plain;version=0.0.4", "Accept: application/openmetrics-text"]
--- response_headers eval
["Content-Type: text/plain; version=0.0.4; charset=utf-8",
 "Content-Type: text/plain; version=0.0.4; charset=utf-8",
 "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"]
--- response_body_like eval
[qr/^hodei_scheduling_latency_seconds_bucket\{le="0\.001"\} \d+$/m,
 qr/\A(?!.* # \{).*^hodei_scheduling_latency_seconds_sum /ms,
 qr/ # \{job_id=/]



=== TEST 4: a protobuf Accept that prefers text, or another encoding, is not protobuf
--- request eval
["GET /api/v1/metrics", "GET /api/v1/metrics"]
--- more_headers eval
["Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.4,text/plain;q=0.5",
 "Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"]
--- response_headers eval
["Content-Type: text/plain; version=0.0.4; charset=utf-8",
 "Content-Type: text/plain; version=0.0.4; charset=utf-8"]



=== TEST 5: set at http{} level, inherited; off in one location
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/seg;
    hodei_http_zone hodei_http 1m;
    hodei_native_histograms on;
--- config
    location = /api/v1/metrics { hodei_metrics; }
    location = /classic { hodei_metrics; hodei_native_histograms off; }
--- request eval
["GET /api/v1/metrics", "GET /classic"]
--- more_headers eval
["Accept: $main::PrometheusNative", "Accept: $main::PrometheusNative"]
--- response_headers eval
["Content-Type: $main::PB_TYPE",
 "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"]



=== TEST 6: nginx's gzip filter compresses it when gzip_types names the bare type
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/seg;
    hodei_http_zone hodei_http 1m;
    gzip on;
    gzip_min_length 1;
    gzip_types application/vnd.google.protobuf;
--- more_headers eval
"Accept: $main::PrometheusNative\r\nAccept-Encoding: gzip"
--- response_headers eval
"Content-Encoding: gzip\r\nContent-Type: $main::PB_TYPE\r\n!Content-Length"
--- response_body_filters eval
[\&main::gunzip_body, \&main::summary]
--- response_body eval
$main::PB_SUMMARY



=== TEST 7: HEAD: the headers of the protobuf GET, no body
--- request
HEAD /api/v1/metrics
--- more_headers eval
"Accept: $main::PrometheusNative"
--- response_headers_like eval
"Content-Type: \Q$main::PB_TYPE\E\r\nContent-Length: [1-9][0-9]{3,}"
--- response_body eval
""



=== TEST 8: a dead daemon: the header families alone, still in protobuf
--- init
main::fill(); unlink $main::seg
--- more_headers eval
"Accept: $main::PrometheusNative"
--- response_headers eval
"Content-Type: $main::PB_TYPE"
--- response_body_filters eval
[\&main::summary]
--- response_body eval
scalar(@main::Families) . " families, schema order\nhodei_http_request_duration_seconds native=no exemplars=0\n"
--- error_log
segment file does not exist; scheduler reported down
