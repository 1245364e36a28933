# Benchmarks of shm/: renderer, publish, read+validate against memcpy.
$(BUILD)/bench/shm_bench: bench/shm_bench.c $(SHM_LIB)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(HODEI_CFLAGS) -o $@ $< $(SHM_LIB) -lm

.PHONY: bench-shm
bench-shm: $(BUILD)/bench/shm_bench
	$(BUILD)/bench/shm_bench

BENCH_TARGETS += bench-shm
