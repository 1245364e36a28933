#!/usr/bin/perl
# core/ unit tests: tokens and the tokens file (cmocka);
# a failure's own messages reach prove's output.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use HodeiTap;
run_tap('build/tests/core_token_test');
