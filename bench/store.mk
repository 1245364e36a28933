# The durable store alone: durable submissions/s against the same store on tmpfs and the
# disk's own fsync rate, and restart (open + load) with 100,000 unfinished jobs.
STORE_BENCH_OBJS := $(BUILD)/obj/core/store_sqlite.o $(BUILD)/obj/core/log.o

$(BUILD)/bench/store_bench: bench/store_bench.c $(STORE_BENCH_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) -o $@ $< $(STORE_BENCH_OBJS) $(CORE_LIBS)

.PHONY: bench-store
bench-store: $(BUILD)/bench/store_bench
	$(BUILD)/bench/store_bench $(BUILD)

BENCH_TARGETS += bench-store
