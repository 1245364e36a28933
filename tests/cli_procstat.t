#!/usr/bin/perl
# The worker agent's /proc parsers (cmocka);
# a failure's own messages reach prove's output.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/cli_procstat_test');
