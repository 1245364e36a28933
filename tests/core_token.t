#!/usr/bin/perl
# core/ unit tests: tokens and the tokens file (cmocka, TAP output).
$ENV{CMOCKA_MESSAGE_OUTPUT} = 'TAP';
exec 'build/tests/core_token_test' or die "exec build/tests/core_token_test: $!";
