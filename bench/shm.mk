# Benchmarks of shm/: renderer, publish, read+validate against memcpy.
$(BUILD)/bench/shm_bench: bench/shm_bench.c $(SHM_LIB)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(HODEI_CFLAGS) -o $@ $< $(SHM_LIB) -lm

.PHONY: bench-shm
bench-shm: $(BUILD)/bench/shm_bench
	$(BUILD)/bench/shm_bench

BENCH_TARGETS += bench-shm

# The idle daemon's segment and RSS, and what tenants and workers add (sizes, one run).
.PHONY: bench-segment
bench-segment: $(BUILD)/hodei-scheduler $(BUILD)/hodei-metrics
	perl bench/segment_size.pl

BENCH_TARGETS += bench-segment
