#!/usr/bin/perl
# core/ unit tests: bus (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/core_bus_test' or die "exec build/tests/core_bus_test: $!";
