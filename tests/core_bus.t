#!/usr/bin/perl
# core/ unit tests: bus (cmocka); a failure's own messages reach prove's output.
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/core_bus_test');
