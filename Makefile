# Hodei — builds everything under build/.  `make demo` and `make test` are the two commands.
#
# Each part of the tree has its own fragment (*/*.mk) that appends to the lists below; this
# file only holds what is shared.

SHELL    := /bin/bash
BUILD    := build
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
HODEI_CFLAGS := -std=c11 -D_GNU_SOURCE -fPIC -pthread $(WARN) -Ishm \
                $(shell pkg-config --cflags liburcu 2>/dev/null)
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
PREFIX   ?= /usr/local
DESTDIR  ?=

BINS           :=     # programs every build makes
TEST_PROGRAMS  :=     # C programs the test suite runs (built by `make test`)
BENCH_TARGETS  :=     # `make bench` runs these in order
INSTALL_TARGETS :=    # `make install` runs these
CLEAN_EXTRA    :=

.PHONY: all deps test demo bench fuzz install clean
all: deps

deps:
	@scripts/deps.sh

# What is missing is installed before anything else, before the pkg-config queries below are
# answered too: make remakes an included makefile first and then reads everything again.
include $(BUILD)/deps.mk
$(BUILD)/deps.mk: scripts/deps.sh
	@scripts/deps.sh
	@mkdir -p $(BUILD) && echo '# scripts/deps.sh has run' > $@

# Parts first, then what uses their variables in prerequisites (tests, benchmarks, install).
include shm/shm.mk
include $(sort $(wildcard core/*.mk core/*/*.mk ngx_hodei_module/*.mk))
include $(sort $(wildcard tests/*.mk bench/*.mk conf/*.mk))

all: $(BINS)

# One prove run over the whole suite: tests/*.t wrap the C and shell tests, t/ holds the
# nginx specs (Test::Nginx::Socket block format, runner in t/lib).
test: all $(TEST_PROGRAMS)
	PERL5LIB=$(CURDIR)/t/lib TEST_NGINX_HODEI_MODULE=$(CURDIR)/$(BUILD)/ngx_http_hodei_module.so \
	    TEST_NGINX_HODEI_BUILD=$(CURDIR)/$(BUILD) TEST_NGINX_SERVROOT=$(CURDIR)/$(BUILD)/servroot \
	    prove -r tests/ t/

demo: all
	scripts/demo.sh $(if $(DURATION),--duration $(DURATION))

bench: all
	@set -e; for t in $(BENCH_TARGETS); do $(MAKE) --no-print-directory $$t; done

install: all $(INSTALL_TARGETS)

clean:
	rm -rf $(BUILD) $(CLEAN_EXTRA)

$(BUILD) $(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@
