#!/usr/bin/perl
# core/ unit tests: request (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/core_request_test' or die "exec build/tests/core_request_test: $!";
