#!/usr/bin/perl
# core/ unit tests: scheduler (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/core_scheduler_test' or die "exec build/tests/core_scheduler_test: $!";
