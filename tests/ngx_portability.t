#!/usr/bin/perl
# The module builds with -Werror against the nginx users run: Debian 12's 1.22, which the
# suite's own build uses, and a newer nginx with HTTP/3 on (`make portability`: Debian 13's
# nginx-dev sources with Debian 13's configure flags).  Nothing is downloaded: without the
# newer source package beside the checkout, the second check is skipped and says so.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTest;
use Test::More;

like(slurp('build/nginx-src/objs/Makefile'), qr/^CFLAGS = .*-Werror/m,
     'the suite builds the module with -Werror');
like(slurp('build/nginx-src/src/core/nginx.h'), qr/#define NGINX_VERSION\s+"1\.22\./,
     'against nginx 1.22');
ok(-s 'build/ngx_http_hodei_module.so', 'and the module is built');

my $out = `make -s --no-print-directory portability 2>&1`;
my $rc = $? >> 8;
SKIP: {
    skip 'no newer nginx-dev package beside the checkout (NGX_NEWER_DEB=PATH)', 3
        if $rc && $out =~ /no newer nginx-dev package/;
    is($rc, 0, 'make portability succeeds') or diag(substr($out, -4000));
    my ($version) = $out =~ /builds with -Werror against nginx (\d+\.\d+\.\d+)/;
    ok(defined $version && $version =~ /^1\.(\d+)\./ && $1 > 22,
       'against a newer nginx (' . ($version // 'none') . ')');
    like(slurp('build/nginx-newer/usr/share/nginx/src/objs/ngx_auto_config.h'),
         qr/^#define NGX_HTTP_V3\s+1$/m, 'configured with HTTP/3');
}
done_testing();
