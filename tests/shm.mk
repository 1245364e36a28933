# Tests of shm/: cmocka unit tests, the multi-process stress test, the fuzz target.

SHM_TEST_LIBS := $(SHM_LIB) -lcmocka -lm -pthread

$(BUILD)/tests/shm_unit: tests/shm_unit.c tests/shm_test_util.h $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -Wno-missing-prototypes -o $@ $< $(SHM_TEST_LIBS)

$(BUILD)/tests/shm_stress: tests/shm_stress.c $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -o $@ $< $(SHM_LIB) -lm -pthread

$(BUILD)/tests/shm_dump_values: tests/shm_dump_values.c $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -o $@ $< $(SHM_LIB) -lm

$(BUILD)/tests/shm_vandal: tests/shm_vandal.c $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -o $@ $< $(SHM_LIB) -lm

# libFuzzer with ASan and UBSan; clang builds the library sources itself.
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               -std=c11 -D_GNU_SOURCE -Ishm $(shell pkg-config --cflags liburcu 2>/dev/null)
$(BUILD)/tests/fuzz_segment: tests/fuzz/fuzz_segment.c $(SHM_SRCS) $(wildcard shm/*.h) | $(BUILD)/tests
	clang $(FUZZ_CFLAGS) -o $@ $< $(SHM_SRCS) -lm

FUZZ_CORPUS := $(BUILD)/fuzz-corpus
# seeds: a fill segment (its first publish lands in slot 1), that slot's payload alone, and an
# encoded native histogram
$(FUZZ_CORPUS)/.seeded: $(BUILD)/hodei-shm-fill $(BUILD)/tests/shm_native_pb
	mkdir -p $(FUZZ_CORPUS)
	$(BUILD)/hodei-shm-fill --tenants 2 --workers 2 $(FUZZ_CORPUS)/segment
	slot=$$(( ($$(stat -c %s $(FUZZ_CORPUS)/segment) - 128) / 3 )); \
	    dd if=$(FUZZ_CORPUS)/segment of=$(FUZZ_CORPUS)/payload bs=1 skip=$$((128 + slot + 128)) \
	       count=$$((slot - 128)) status=none
	$(BUILD)/tests/shm_native_pb /dev/null /dev/null $(FUZZ_CORPUS)/native
	touch $@

FUZZ_SECONDS ?= 300
fuzz: $(BUILD)/tests/fuzz_segment $(FUZZ_CORPUS)/.seeded
	$(BUILD)/tests/fuzz_segment -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	    -artifact_prefix=$(BUILD)/ $(FUZZ_CORPUS)

TEST_PROGRAMS += $(BUILD)/tests/shm_unit $(BUILD)/tests/shm_stress $(BUILD)/tests/shm_dump_values \
                 $(BUILD)/tests/shm_vandal \
                 $(BUILD)/tests/fuzz_segment $(FUZZ_CORPUS)/.seeded

# Native histograms and the protobuf exposition: unit tests, and a program writing a protobuf
# exposition with native histograms and exemplars for the independent decoder (shm_protobuf.t).
$(BUILD)/tests/shm_native: tests/shm_native.c tests/shm_test_util.h $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -Wno-missing-prototypes -o $@ $< $(SHM_TEST_LIBS)

TEST_PROGRAMS += $(BUILD)/tests/shm_native

$(BUILD)/tests/shm_native_pb: tests/shm_native_pb.c tests/shm_test_util.h $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -Wno-missing-prototypes -o $@ $< $(SHM_LIB) -lm

TEST_PROGRAMS += $(BUILD)/tests/shm_native_pb

# Recorded histograms (classic + native + exemplars) and their place in the payload.
$(BUILD)/tests/shm_histogram: tests/shm_histogram.c tests/shm_test_util.h $(SHM_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HODEI_CFLAGS) -Wno-missing-prototypes -o $@ $< $(SHM_TEST_LIBS)

TEST_PROGRAMS += $(BUILD)/tests/shm_histogram
