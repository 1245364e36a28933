# shm/: the segment library (no nginx, no daemon types) and its two command-line tools.

SHM_SRCS := shm/hodei_schema.c shm/hodei_snapshot.c shm/hodei_segment.c shm/hodei_render.c \
            shm/hodei_fill.c shm/hodei_native.c shm/hodei_protobuf.c shm/hodei_histogram.c
SHM_OBJS := $(SHM_SRCS:shm/%.c=$(BUILD)/obj/shm/%.o)
SHM_LIB  := $(BUILD)/libhodeishm.a

$(BUILD)/obj/shm/%.o: shm/%.c $(wildcard shm/*.h) | $(BUILD)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -c -o $@ $<

$(SHM_LIB): $(SHM_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/hodei-metrics: shm/cli/hodei_metrics_main.c $(SHM_LIB)
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -o $@ $< $(SHM_LIB) -lm

$(BUILD)/hodei-shm-fill: shm/cli/hodei_shm_fill.c $(SHM_LIB)
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -o $@ $< $(SHM_LIB) -lm

BINS += $(SHM_LIB) $(BUILD)/hodei-metrics $(BUILD)/hodei-shm-fill
