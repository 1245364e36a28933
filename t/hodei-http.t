# The log phase: hodei_http_requests_total and hodei_http_request_duration_seconds, counted by
# every worker into one zone; labels, hostile input, capacity, and locations left out.
use strict;
use warnings;

use FindBin ();
use Test::Nginx::Socket 'no_plan';
use lib $FindBin::Bin;
use HodeiSpec;

# hodei_http_requests_total samples as "method endpoint status count" lines, sorted.
sub http_samples {
    my ($body) = @_;
    my @s = $body =~ /^hodei_http_requests_total\{method="([^"]*)",endpoint="((?:[^"\\]|\\.)*)",status_code="([^"]*)"\} (\d+)$/mg;
    my @lines;
    push @lines, join(' ', splice @s, 0, 4) . "\n" while @s;
    return join '', sort @lines;
}

workers(2);
master_on();

# No daemon here: only nginx's own families are served.
block_defaults(http_config => "hodei_segment $ENV{TEST_NGINX_HODEI_DIR}/absent;\n"
                              . "hodei_http_zone hodei_http 1m;\n");

run_tests();

__DATA__

=== TEST 1: exact counts after a known sequence served by two worker processes
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/absent;
    hodei_http_zone hodei_http 1m;

    # reuseport: the kernel spreads the proxied connections over both workers
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 reuseport;
        location /work/ { hodei_http_endpoint backend; return 200 "ok\n"; }
        location /missing { hodei_http_endpoint backend; return 404; }
        location /who { hodei_http_endpoint "worker-$pid"; return 204; }
    }
--- config
    location = /api/v1/metrics { hodei_http_metrics off; hodei_metrics; }
    location /work/ { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
    location /missing { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
    location /who { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- request eval
[ ("GET /work/a") x 12, ("POST /work/b\nhello") x 4, ("GET /missing") x 3, ("GET /who") x 16,
  ("GET /api/v1/metrics") x 3 ]
--- error_code eval
[ (200) x 16, (404) x 3, (204) x 16, (200) x 3 ]
--- response_body_like eval
[ (qr/^ok$/) x 16, (qr/404 Not Found/) x 3, (qr/^$/) x 16,
  main::lines_re(
    'hodei_http_requests_total\{method="GET",endpoint="/work/",status_code="200"\} 12',
    'hodei_http_requests_total\{method="POST",endpoint="/work/",status_code="200"\} 4',
    'hodei_http_requests_total\{method="GET",endpoint="/missing",status_code="404"\} 3',
    'hodei_http_requests_total\{method="GET",endpoint="/who",status_code="204"\} 16',
    'hodei_http_requests_total\{method="GET",endpoint="backend",status_code="200"\} 12',
    'hodei_http_requests_total\{method="POST",endpoint="backend",status_code="200"\} 4',
    'hodei_http_requests_total\{method="GET",endpoint="backend",status_code="404"\} 3',
    'hodei_http_request_duration_seconds_bucket\{le="\+Inf"\} 70',
    'hodei_http_request_duration_seconds_count 70'),
  # both workers counted into the one zone
  qr/^hodei_http_requests_total\{method="GET",endpoint="worker-(\d+)",status_code="204"\} \d+\n(?:.*\n)*hodei_http_requests_total\{method="GET",endpoint="worker-(?!\1")\d+",status_code="204"\} \d+\n/m,
  # nothing else was counted: the scrapes are off
  qr/\A(?:(?!api\/v1\/metrics).)*\z/s ]
--- response_body_filters eval
[ ([]) x 35, [], [], [\&main::http_samples] ]
--- no_error_log
[alert]
[crit]



=== TEST 2: the endpoint is the matched location's name, never the raw URI
--- config
    location = /api/v1/metrics { hodei_http_metrics off; hodei_metrics; }
    location /api/ { return 200; }
    location = /exact { return 200; }
    location ~ ^/re/[0-9]+$ { return 200; }
    location /fallback { try_files /nonexistent @named; }
    location @named { return 202; }
    location /cond { if ($arg_x) { return 201; } return 200; }
    location /nested/ { location /nested/inner/ { return 200; } return 200; }
--- request eval
[ "GET /api/v1/jobs/1234", "GET /api/v1/jobs/5678?x=1", "GET /exact", "GET /re/42",
  "GET /fallback/x", "GET /cond?x=1", "GET /cond", "GET /nested/inner/x", "GET /nested/y",
  "GET /api/v1/metrics" ]
--- error_code eval
[ 200, 200, 200, 200, 202, 201, 200, 200, 200, 200 ]
--- response_body_filters eval
[ ([]) x 9, [\&main::http_samples] ]
--- response_body eval
[ ("") x 9, <<'_EOS_' ]
GET /api/ 200 2
GET /cond 200 1
GET /cond 201 1
GET /exact 200 1
GET /nested/ 200 1
GET /nested/inner/ 200 1
GET @named 202 1
GET ^/re/[0-9]+$ 200 1
_EOS_



=== TEST 3: hodei_http_endpoint: fixed, with variables, inherited, and sanitised
--- config
    hodei_http_endpoint "server default";
    location = /api/v1/metrics { hodei_http_metrics off; hodei_metrics; }
    location /inherit { return 200; }
    location /fixed { hodei_http_endpoint "jobs api"; return 200; }
    location /var { hodei_http_endpoint "var-$arg_v"; return 200; }
    location /raw/ { hodei_http_endpoint $uri; return 200; }
    location /empty { hodei_http_endpoint $arg_nothing; return 200; }
--- request eval
[ "GET /inherit", "GET /fixed/1", "GET /fixed/2", "GET /var?v=abc", "GET /var?v=abc",
  "GET /var?v=xyz", "GET /raw/%FF%FEok", "GET /raw/a%22b%5Cc%0Ad", "GET /raw/" . ("a" x 300),
  "GET /raw/" . ("a" x 121) . "%C3%A9%C3%A9", "GET /raw/" . ("b" x 122) . "%C3%A9", "GET /empty", "GET /api/v1/metrics" ]
--- response_body_filters eval
[ ([]) x 12, [\&main::http_samples] ]
--- response_body eval
[ ("") x 12, CORE::join "\n", sort(
    "GET jobs api 200 2",
    "GET server default 200 1",
    "GET var-abc 200 2",
    "GET var-xyz 200 1",
    "GET /raw/\xef\xbf\xbd\xef\xbf\xbdok 200 1",
    "GET /raw/a\\\"b\\\\c\\nd 200 1",
    "GET /raw/" . ("a" x 123) . " 200 1",
    "GET /raw/" . ("a" x 121) . "\xc3\xa9 200 1",
    "GET /raw/" . ("b" x 122) . " 200 1",
    "GET - 200 1"), "" ]



=== TEST 4: hostile and unknown methods are counted as OTHER, known ones by name
--- config
    location = /api/v1/metrics { hodei_http_metrics off; hodei_metrics; }
    location /m { return 200; }
--- request eval
[ "FOO /m", "BREW /m", "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX /m",
  "PROPFIND /m", "DELETE /m", "OPTIONS /m", "PATCH /m", "get /m", "GET /api/v1/metrics" ]
--- error_code eval
[ 200, 200, 200, 200, 200, 200, 200, 400, 200 ]
--- response_body_filters eval
[ ([]) x 8, [\&main::http_samples] ]
--- response_body eval
[ ("") x 7, qr/400 Bad Request/, <<'_EOS_' ]
DELETE /m 200 1
OPTIONS /m 200 1
OTHER - 400 1
OTHER /m 200 3
PATCH /m 200 1
PROPFIND /m 200 1
_EOS_



=== TEST 5: past the zone's capacity requests fold into __overflow__, and are counted
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/absent;
    hodei_http_zone hodei_tiny 32k;
--- config
    location = /api/v1/metrics { hodei_http_metrics off; hodei_metrics; }
    location /cap { hodei_http_endpoint "e-$arg_n"; return 200 "ok\n"; }
--- request eval
[ (map { "GET /cap?n=$_" } 1 .. 200), "GET /api/v1/metrics" ]
--- error_code eval
[ (200) x 201 ]
--- response_body_filters eval
[ ([]) x 200, [sub {
    my ($body) = @_;
    my @named = $body =~ /^hodei_http_requests_total\{method="GET",endpoint="e-\d+",status_code="200"\} 1$/mg;
    my ($folded) = $body =~ /^hodei_http_requests_total\{method="__overflow__",endpoint="__overflow__",status_code="__overflow__"\} (\d+)$/m;
    my ($counted) = $body =~ /^hodei_metrics_label_overflow_total\{family="hodei_http_requests_total"\} (\d+)$/m;
    my ($total) = $body =~ /^hodei_http_request_duration_seconds_count (\d+)$/m;
    $folded //= 0;
    $counted //= 0;
    return "named+folded=" . (@named + $folded) . " overflowed=" . ($folded > 0 ? "yes" : "no")
         . " counted=" . ($counted == $folded ? "same" : "$counted!=$folded") . " total=$total\n";
}] ]
--- response_body eval
[ ("ok\n") x 200, "named+folded=200 overflowed=yes counted=same total=200\n" ]
--- no_error_log
[alert]
[crit]



=== TEST 6: hodei_http_metrics off leaves a location out
--- config
    location = /api/v1/metrics { hodei_metrics; }
    location /on { return 200; }
    location /off { hodei_http_metrics off; return 200; location /off/again-on { hodei_http_metrics on; return 200; } }
--- request eval
[ "GET /on", "GET /off", "GET /off/x", "GET /off/again-on", "GET /api/v1/metrics" ]
--- response_body_filters eval
[ ([]) x 4, [\&main::http_samples] ]
--- response_body eval
[ ("") x 4, <<'_EOS_' ]
GET /off/again-on 200 1
GET /on 200 1
_EOS_



=== TEST 7: status as the access log's $status: 499 when the client leaves first, 408 when it sends too slowly
--- http_config
    hodei_segment $TEST_NGINX_HODEI_DIR/absent;
    hodei_http_zone hodei_http 1m;
    limit_req_zone $server_port zone=slow:1m rate=1r/m;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        # the second request waits a minute for its turn
        location / {
            hodei_http_endpoint backend;
            limit_req zone=slow burst=5;
            root html;
            try_files /index.html =404;
        }
    }
--- config
    location = /api/v1/metrics { hodei_http_metrics off; hodei_metrics; }
    location /slow { proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
    # nginx gives up on the body after 1 s, the client (--- timeout) only after 8 s
    location /body { client_body_timeout 1s; proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- abort
--- timeout: 8
--- request eval
[ "GET /slow", "GET /slow", "POST /body\nshort", "GET /api/v1/metrics" ]
--- more_headers eval
[ "", "", "Content-Length: 100", "" ]
--- error_code eval
[ 200, "", "", 200 ]
--- response_body_filters eval
[ ([]) x 3, [\&main::http_samples] ]
--- response_body eval
[ qr/It works!/, "", "", <<'_EOS_' ]
GET /slow 200 1
GET /slow 499 1
GET backend 200 1
GET backend 499 1
POST /body 408 1
_EOS_
