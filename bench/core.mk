# hodei-scheduler benchmarks: in-process placement and publish, and job submission through
# nginx against nginx proxying to a trivial upstream.
$(BUILD)/bench/core_bench: bench/core_bench.c $(CORE_LOGIC_OBJS) $(BUILD)/obj/core/metrics.o $(SHM_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) -o $@ $< $(CORE_LOGIC_OBJS) $(BUILD)/obj/core/metrics.o \
	    $(SHM_LIB) $(CORE_LIBS)

.PHONY: bench-core bench-core-api
bench-core: $(BUILD)/bench/core_bench
	$(BUILD)/bench/core_bench

bench-core-api: $(BUILD)/hodei-scheduler
	perl bench/core_api_bench.pl

BENCH_TARGETS += bench-core bench-core-api
