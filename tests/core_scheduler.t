#!/usr/bin/perl
# core/ unit tests: the scheduler, and rollbacks that leave no trace (cmocka);
# a failure's own messages reach prove's output.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/core_scheduler_test');
