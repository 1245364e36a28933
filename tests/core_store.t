#!/usr/bin/perl
# core/ unit tests: the durable store (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/core_store_test' or die "exec build/tests/core_store_test: $!";
