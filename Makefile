# shortstat -- build, test, run, bench.
#
# Two flavours live side by side under $(BUILD):
#   $(BUILD)/rel  -O2 -g, what `make run` and `make bench` use
#   $(BUILD)/san  -O1 -g with AddressSanitizer + UBSan, what `make test` uses
# Sources are found by directory, so adding a file needs no Makefile edit:
#   engine/*.c                      -> libeng.a   (pure library, no I/O)
#   snapshot/*.c but snap_tool.c    -> libsnap.a  (+ shortstat-snap from snap_tool.c)
#   net/*.c but main.c              -> libnet.a   (+ shortstatd from main.c)
#   bench/*.c but main.c            -> libbench.a (+ shortstat-bench from main.c)
#   tests/test_*.c + tests/main.c   -> one Check runner; each test_X.c defines
#                                      `Suite *X_suite(void)`, listed automatically
#   tests/fuzz/fuzz_*.c             -> libFuzzer targets (`make fuzz`)

CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr/local

# Debian packages the build, the tests and the benchmarks need.
DEPS_PKGS := build-essential clang pkg-config uthash-dev libev-dev liblz4-dev \
             libxxhash-dev check libjansson-dev libhttp-parser-dev \
             redis-tools curl
BENCH_PKGS := redis-server

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -I. $(WARN) -g -fno-omit-frame-pointer \
               $(shell pkg-config --cflags check 2>/dev/null)
REL_CFLAGS  := $(BASE_CFLAGS) -O2
SAN_FLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=all
SAN_CFLAGS  := $(BASE_CFLAGS) -O1 $(SAN_FLAGS)
LIBS        := -lev -llz4 -lxxhash -ljansson -lhttp_parser -lm
CHECK_LIBS  := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lpthread -lm)

ENG_SRCS   := $(sort $(wildcard engine/*.c))
SNAP_SRCS  := $(sort $(filter-out snapshot/snap_tool.c,$(wildcard snapshot/*.c)))
NET_SRCS   := $(sort $(filter-out net/main.c,$(wildcard net/*.c)))
BENCH_SRCS := $(sort $(filter-out bench/main.c,$(wildcard bench/*.c)))
TESTS      ?= $(sort $(wildcard tests/test_*.c))
HDRS       := $(wildcard engine/*.h snapshot/*.h net/*.h bench/*.h tests/*.h)

.PHONY: all rel san deps bench-deps run test check bench fuzz clean help FORCE

all: rel

help:
	@echo "make run     build and start shortstatd with its defaults (data in ./data)"
	@echo "make test    every test under ASan+UBSan (installs missing packages)"
	@echo "make bench   the benchmark suite (docs/benchmarks.md)"
	@echo "make fuzz    libFuzzer targets for a bounded time (FUZZ_SECONDS=$(FUZZ_SECONDS))"
	@echo "make deps    install missing Debian packages"

# ---- dependencies ----------------------------------------------------------
# Installs only what is missing. As root it runs apt-get (refreshing the
# package lists only when the first try fails); otherwise it prints the exact
# command and fails, so nothing half-builds. $(1): what for, $(2): packages.
define install_missing
	@missing=""; for p in $(2); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "$(1): installing$$missing"; \
	    (apt-get install -y --no-install-recommends $$missing || \
	     (apt-get update && apt-get install -y --no-install-recommends $$missing)) >/tmp/shortstat-deps.log 2>&1 \
	     || { cat /tmp/shortstat-deps.log; exit 1; }; \
	  else \
	    echo "$(1): missing packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

deps:
	$(call install_missing,deps,$(DEPS_PKGS))

bench-deps: deps
	$(call install_missing,bench,$(BENCH_PKGS))

# ---- objects -----------------------------------------------------------------
$(BUILD)/rel/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -c $< -o $@

$(BUILD)/san/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -c $< -o $@

define flavour
$(BUILD)/$(1)/libeng.a: $(ENG_SRCS:%.c=$(BUILD)/$(1)/%.o)
	@rm -f $$@; ar rcs $$@ $$^
$(BUILD)/$(1)/libsnap.a: $(SNAP_SRCS:%.c=$(BUILD)/$(1)/%.o)
	@rm -f $$@; ar rcs $$@ $$^
$(BUILD)/$(1)/libnet.a: $(NET_SRCS:%.c=$(BUILD)/$(1)/%.o)
	@rm -f $$@; ar rcs $$@ $$^
$(BUILD)/$(1)/shortstatd: $(BUILD)/$(1)/net/main.o $(BUILD)/$(1)/libnet.a $(BUILD)/$(1)/libsnap.a $(BUILD)/$(1)/libeng.a
	$(CC) $(2) -o $$@ $$^ $(LIBS)
$(BUILD)/$(1)/shortstat-snap: $(BUILD)/$(1)/snapshot/snap_tool.o $(BUILD)/$(1)/libsnap.a $(BUILD)/$(1)/libeng.a
	$(CC) $(2) -o $$@ $$^ $(LIBS)
$(BUILD)/$(1)/libbench.a: $(BENCH_SRCS:%.c=$(BUILD)/$(1)/%.o)
	@rm -f $$@; ar rcs $$@ $$^
$(BUILD)/$(1)/shortstat-bench: $(BUILD)/$(1)/bench/main.o $(BUILD)/$(1)/libbench.a $(BUILD)/$(1)/libsnap.a $(BUILD)/$(1)/libeng.a
	$(CC) $(2) -o $$@ $$^ $(LIBS) -lpthread
endef
$(eval $(call flavour,rel,$(REL_CFLAGS)))
$(eval $(call flavour,san,$(SAN_CFLAGS)))

REL_BINS := $(BUILD)/rel/shortstatd $(BUILD)/rel/shortstat-snap $(BUILD)/rel/shortstat-bench
rel: $(REL_BINS)
san: $(BUILD)/san/shortstatd $(BUILD)/san/shortstat-snap $(BUILD)/san/shortstat-bench

# ---- tests -----------------------------------------------------------------
# The suite list is generated from the test files so no one edits a shared list.
# Regenerated on every run (TESTS= may name fewer files than last time); the
# file is only replaced when its content changes, so nothing rebuilds needlessly.
# A definition is `Suite *X_suite(void)` at the start of a line, not followed
# by `;` (a prototype).
$(BUILD)/san/tests/suites.h: FORCE
	@mkdir -p $(dir $@)
	@for f in $(TESTS); do sed -n 's/^Suite \*\([a-z0-9_]*\)_suite(void)[[:space:]]*{\{0,1\}[[:space:]]*$$/SUITE(\1)/p' $$f; done > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp
FORCE:

$(BUILD)/san/tests/main.o: tests/main.c $(BUILD)/san/tests/suites.h $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -I$(BUILD)/san/tests -c $< -o $@

$(BUILD)/san/tests/%.o: tests/%.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -DSHORTSTAT_BUILD='"$(abspath $(BUILD))/san"' -c $< -o $@

$(BUILD)/san/tests/run: $(BUILD)/san/tests/main.o $(TESTS:%.c=$(BUILD)/san/%.o) \
                        $(BUILD)/san/libbench.a $(BUILD)/san/libnet.a $(BUILD)/san/libsnap.a \
                        $(BUILD)/san/libeng.a
	$(CC) $(SAN_CFLAGS) -o $@ $^ $(LIBS) $(CHECK_LIBS) -lpthread

# halt_on_error keeps a sanitizer finding fatal even inside forked children.
TEST_ENV := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            CK_DEFAULT_TIMEOUT=120 SHORTSTAT_BUILD=$(abspath $(BUILD))/san

# SUITE=name runs one suite (Check's CK_RUN_SUITE); CK_VERBOSITY=verbose for detail.
test: deps san $(BUILD)/san/tests/run
	@$(TEST_ENV) $(if $(SUITE),CK_RUN_SUITE=$(SUITE)) $(BUILD)/san/tests/run

check: test

# ---- run -------------------------------------------------------------------
run: $(BUILD)/rel/shortstatd
	@mkdir -p data
	exec $(BUILD)/rel/shortstatd --dir ./data

# ---- bench -------------------------------------------------------------------
bench: bench-deps rel
	@mkdir -p bench/results
	$(BUILD)/rel/shortstat-bench suite --json bench/results/latest.json

# ---- fuzz --------------------------------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined
$(BUILD)/fuzz/%: tests/fuzz/%.c $(ENG_SRCS) $(SNAP_SRCS) $(NET_SRCS) $(HDRS) | deps
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(ENG_SRCS) $(SNAP_SRCS) $(NET_SRCS) $(LIBS)

fuzz: $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
	@for f in $^; do n=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$n; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      $(BUILD)/fuzz/corpus-$$n tests/fuzz/corpus/$$n || exit 1; done

clean:
	rm -rf $(BUILD)
