#!/usr/bin/perl
# core/ unit tests: request validation and the metrics snapshot (cmocka);
# a failure's own messages reach prove's output.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/core_request_test');
