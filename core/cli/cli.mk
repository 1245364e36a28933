# core/cli/: hodei-worker (the worker agent) and hodeictl (the API's command-line client).
# Both share client.c (libcurl + jansson); the agent alone reads /proc (procstat.c); hodeictl's
# `token` commands share core/token.c with the daemon.  libcrypto: base64 and SHA-256.

CLI_CFLAGS := $(shell pkg-config --cflags libcurl jansson) -Icore
CLI_LIBS   := $(shell pkg-config --libs libcurl jansson) -lcrypto
CLI_DEPS   := $(wildcard core/cli/*.h) $(wildcard core/*.h) $(wildcard shm/*.h)

$(BUILD)/obj/cli/%.o: core/cli/%.c $(CLI_DEPS) | $(BUILD)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) $(CLI_CFLAGS) -c -o $@ $<

$(BUILD)/obj/cli/token.o: core/token.c $(CLI_DEPS) | $(BUILD)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) $(CLI_CFLAGS) -c -o $@ $<

$(BUILD)/hodei-worker: $(BUILD)/obj/cli/hodei_worker.o $(BUILD)/obj/cli/procstat.o \
                       $(BUILD)/obj/cli/client.o $(SHM_LIB)
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -o $@ $^ $(CLI_LIBS)

$(BUILD)/hodeictl: $(BUILD)/obj/cli/hodeictl.o $(BUILD)/obj/cli/client.o $(BUILD)/obj/cli/token.o \
                   $(SHM_LIB)
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -o $@ $^ $(CLI_LIBS)

$(BUILD)/tests/cli_procstat_test: tests/cli_procstat_test.c $(BUILD)/obj/cli/procstat.o | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -Icore/cli -o $@ $^ -lcmocka

BINS          += $(BUILD)/hodei-worker $(BUILD)/hodeictl
TEST_PROGRAMS += $(BUILD)/tests/cli_procstat_test
