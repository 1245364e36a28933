# The scrape: every family of the schema, formats, HEAD, 405 and nginx's gzip filter.
use strict;
use warnings;

use FindBin ();
use IO::Uncompress::Gunzip ();
use Test::Nginx::Socket 'no_plan';
use lib $FindBin::Bin;
use HodeiSpec;

# The families, in exposition order: [name, type, source].
our @Families = schema_families();

# Every family once, in schema order, HELP before TYPE.
sub all_families_re {
    my ($om) = @_;
    my $re = join '.*', map {
        my ($name, $type) = @$_;
        # OpenMetrics names a counter's family without the _total of its samples
        $name =~ s/_total$// if $om && $type eq 'counter';
        "^# HELP \Q$name\E .*^# TYPE \Q$name\E $type\$"
    } @Families;
    return qr/\A$re/ms;
}

sub gunzip_body {
    my ($in) = @_;
    my $out;
    IO::Uncompress::Gunzip::gunzip(\$in => \$out) or return "gunzip failed";
    return $out;
}

# Unless a block says otherwise: a filled segment, the HTTP zone, and one scrape.
block_defaults(
    http_config => "hodei_segment $seg;\nhodei_http_zone hodei_http 1m;\n",
    config => "location = /api/v1/metrics { hodei_metrics; }\n",
    init => 'main::fill()',
    request => "GET /api/v1/metrics\n");

no_shuffle();
run_tests();

__DATA__

=== TEST 1: every family of the schema, with HELP and TYPE, in order; daemon and nginx samples
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
Vary: Accept
--- response_body_like eval
main::all_families_re(0)
--- no_error_log
[error]
[alert]



=== TEST 2: samples of the daemon's families and the header's
--- response_body_like eval
main::lines_re(
    'hodei_scheduler_up 1',
    'hodei_metrics_snapshot_age_seconds \d[0-9.e-]*',
    'hodei_jobs_scheduled_total\{tenant_id="tenant-0003"\} [1-9][0-9]*',
    'hodei_jobs_failed_total\{tenant_id="tenant-0001",error_type="worker_lost"\} [1-9][0-9]*',
    'hodei_scheduling_latency_seconds_bucket\{le="\+Inf"\} [1-9][0-9]*',
    'hodei_cpu_usage_percent\{worker_id="worker-00004"\} [0-9.]+',
    'hodei_build_info\{version="[^"]+"\} 1',
    'hodei_http_request_duration_seconds_count 0')
--- no_error_log
[error]



=== TEST 3: HEAD: the headers of a GET, no body
--- request
HEAD /api/v1/metrics
--- response_headers_like
Content-Type: text/plain; version=0\.0\.4; charset=utf-8
Content-Length: [1-9][0-9]{3,}
--- response_body eval
""



=== TEST 4: POST is refused with 405 and Allow; its body is discarded
--- request eval
["POST /api/v1/metrics\n" . ("x" x 10000), "PUT /api/v1/metrics\nabc", "DELETE /api/v1/metrics"]
--- error_code eval
[405, 405, 405]
--- response_headers eval
["Allow: GET, HEAD", "Allow: GET, HEAD", "Allow: GET, HEAD"]
--- response_body_like eval
[qr/405 Not Allowed/, qr/405 Not Allowed/, qr/405 Not Allowed/]



=== TEST 5: Accept: application/openmetrics-text gets OpenMetrics 1.0
--- config
    location = /api/v1/metrics { hodei_metrics; }
    location = /work { return 204; }
--- request eval
["GET /work", "GET /api/v1/metrics"]
--- more_headers eval
["", "Accept: application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"]
--- error_code eval
[204, 200]
--- response_headers eval
["", "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"]
--- response_body_like eval
[qr/^$/, qr/(?=.*^# TYPE hodei_jobs_scheduled counter\n)(?=.*^hodei_jobs_scheduled_created\{tenant_id="tenant-0001"\} \d)(?=.*^hodei_http_requests_total\{method="GET",endpoint="\/work",status_code="204"\} 1\n)(?=.*^hodei_http_requests_created\{method="GET",endpoint="\/work",status_code="204"\} \d)(?!.*^# EOF\n.)\A.*^# EOF\n\z/ms]



=== TEST 6: every family in OpenMetrics too
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/seg;
--- more_headers
Accept: application/openmetrics-text
--- response_body_like eval
main::all_families_re(1)



=== TEST 7: a client preferring text/plain gets text 0.0.4
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/seg;
--- more_headers
Accept: application/openmetrics-text;q=0.3, text/plain;q=0.9
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
--- response_body_unlike
# EOF



=== TEST 8: nginx's gzip filter compresses the scrape
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/seg;
    hodei_http_zone hodei_http 1m;
    gzip on;
    gzip_min_length 1;
    gzip_types text/plain application/openmetrics-text;
--- more_headers
Accept-Encoding: gzip
--- response_headers
Content-Encoding: gzip
Content-Type: text/plain; version=0.0.4; charset=utf-8
!Content-Length
--- response_body_filters eval
[\&main::gunzip_body]
--- response_body_like eval
main::all_families_re(0)



=== TEST 9: a large segment is served whole, across many output buffers
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/seg;
--- init
main::fill('--tenants', 2000, '--workers', 3000)
--- response_body_filters eval
[sub { my @n = $_[0] =~ /^hodei_memory_usage_mb\{/mg; scalar(@n) . " memory samples\n" . ($_[0] =~ /\A# HELP .*\n# TYPE hodei_metrics_label_overflow_total counter\n(?:hodei_metrics_label_overflow_total\{.*\n)*\z/s ? "whole\n" : "cut\n") }]
--- response_body
3000 memory samples
whole
