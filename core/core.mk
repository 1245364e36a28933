# core/: the hodei-scheduler daemon, its unit tests and its benchmarks' programs.

CORE_LIBS   := -lmicrohttpd -ljansson -lurcu-bp -lurcu-cds -lurcu-common -lcrypto -lm -lpthread
CORE_CFLAGS := $(HODEI_CFLAGS) -Icore -DHODEI_VERSION='"$(VERSION)"'
# The scheduler logic without HTTP: linked into the daemon, the unit tests and the bench.
CORE_LOGIC  := alloc capindex heap scheduler request json bus log token auth
CORE_DAEMON := config engine metrics api main
# The durable store (store.h) on SQLite, linked wherever the logic is.
CORE_LOGIC  += store_sqlite
CORE_LIBS   += $(shell pkg-config --libs sqlite3)
CORE_LOGIC_OBJS  := $(CORE_LOGIC:%=$(BUILD)/obj/core/%.o)
CORE_DAEMON_OBJS := $(CORE_DAEMON:%=$(BUILD)/obj/core/%.o)

$(BUILD)/obj/core/%.o: core/%.c $(wildcard core/*.h) $(wildcard shm/*.h) VERSION | $(BUILD)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) -c -o $@ $<

$(BUILD)/hodei-scheduler: $(CORE_DAEMON_OBJS) $(CORE_LOGIC_OBJS) $(SHM_LIB)
	$(CC) $(CFLAGS) -pthread -o $@ $(CORE_DAEMON_OBJS) $(CORE_LOGIC_OBJS) $(SHM_LIB) $(CORE_LIBS)

BINS += $(BUILD)/hodei-scheduler

# Unit tests (cmocka): tests/core_*_test.c, each wrapped by tests/core_*.t.
CORE_TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/core_*_test.c))

$(BUILD)/tests/core_%_test: tests/core_%_test.c $(CORE_LOGIC_OBJS) $(BUILD)/obj/core/metrics.o \
                            $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(CORE_CFLAGS) -o $@ $< $(CORE_LOGIC_OBJS) $(BUILD)/obj/core/metrics.o \
	    $(SHM_LIB) $(CORE_LIBS) -lcmocka

TEST_PROGRAMS += $(CORE_TESTS)
