# kdedup - plain make + pkg-config. `make help` lists the targets.

CC       ?= cc
BUILD    ?= build
WERROR   ?= 0
SANITIZE ?=
FUZZ_SECONDS ?= 30

# Debian packages the build, tests, fuzzing and benchmarks need (graphviz:
# docs/architecture.png; prometheus: promtool checks deploy/'s alert rules;
# its service is not started by the tests).
DEB_PACKAGES := gcc make pkg-config clang libclang-rt-14-dev clang-format valgrind \
                libssl-dev librocksdb-dev librdkafka-dev libcjson-dev libcmocka-dev \
                libmicrohttpd-dev python3-kafka python3-prometheus-client \
                graphviz prometheus
# Commands the tests need (tests/deploy/test_deploy.sh: node, npm, kubectl
# kustomize), each with the Debian package installed when the machine has no
# such command. One from elsewhere (a newer Node.js, a cloud SDK's kubectl)
# is kept: Debian's npm would not install beside another Node.js's. Debian's
# kubectl (kubernetes-client, 1.20, kustomize 2.0.3) is installed where there
# is none, but it cannot render deploy/k8s (a kustomize Component, `labels`):
# test_deploy.sh then says that kustomize v5 (kubectl >= 1.27) is needed.
DEB_COMMANDS := node:nodejs npm:npm kubectl:kubernetes-client java:openjdk-17-jdk-headless \
                mvn:maven

PKGS_DEDUP := libcrypto
PKGS_ROCKS := rocksdb
PKGS_CONFIG := libcjson
PKGS_KAFKA := rdkafka
PKGS_HTTP := libmicrohttpd
PKGS_TEST  := cmocka

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wpointer-arith -Wvla
ifeq ($(WERROR),1)
WARN += -Werror
endif

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -pthread $(WARN) -I. -MMD -MP
LDFLAGS += -pthread
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# Hardening (HARDEN=1, the default), as Debian's hardening=+all: the stack
# protector, _FORTIFY_SOURCE (needs optimisation: not with -O0), stack clash
# protection, a position-independent executable, full RELRO (BIND_NOW) and
# a non-executable stack. tests/image/test_hardening.sh reads them off the
# binary. Not with SANITIZE (ASan replaces the functions _FORTIFY_SOURCE
# checks); the fuzzers build apart (FUZZ_CFLAGS).
HARDEN ?= 1
HARDEN_CFLAGS := -fstack-protector-strong -fstack-clash-protection -fPIE
HARDEN_FORTIFY := -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2
HARDEN_LDFLAGS := -pie -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack
ifeq ($(HARDEN)$(SANITIZE),1)
CFLAGS  += $(HARDEN_CFLAGS)
ifneq ($(filter -O%,$(filter-out -O0,$(CFLAGS))),)
CFLAGS  += $(HARDEN_FORTIFY)
endif
LDFLAGS += $(HARDEN_LDFLAGS)
endif

# Every object depends on the flags it was built with: a change of CFLAGS,
# LDFLAGS, SANITIZE or HARDEN rebuilds everything ($(BUILD)/flags is
# rewritten only when they change; warnings, WERROR too, are left out).
FLAGS_STAMP := $(BUILD)/flags
FLAGS_BUILT := $(CC) $(filter-out $(WARN),$(CFLAGS)) $(LDFLAGS)

pc_cflags = $(shell pkg-config --cflags $(1) 2>/dev/null)
pc_libs   = $(shell pkg-config --libs $(1) 2>/dev/null)

LIB_DEDUP := $(BUILD)/libkd_dedup.a
LIB_ROCKS := $(BUILD)/libkd_store_rocks.a
LIB_CONFIG := $(BUILD)/libkd_config.a
LIB_SIDECAR := $(BUILD)/libkd_sidecar.a
KDEDUP := $(BUILD)/kdedup
# recovery's read for one key, and a dead run's claim left in a store: tools of
# tests/e2e/hanging_txn_test.py
FIND_SINCE := $(BUILD)/tests/find_since
DEAD_CLAIM := $(BUILD)/tests/dead_claim

DEDUP_SRC := dedup/store.c dedup/store_mem.c dedup/entry.c dedup/dedup.c dedup/dedup_batch.c \
             dedup/dedup_claim.c dedup/dedup_complete.c dedup/dedup_single.c dedup/sha256.c \
             dedup/hex.c dedup/fmt.c
ROCKS_SRC := store_rocks/store_rocks.c store_rocks/store_rocks_read.c store_rocks/store_rocks_write.c \
             store_rocks/store_rocks_retention.c store_rocks/store_rocks_options.c \
             store_rocks/store_rocks_open.c store_rocks/store_rocks_stats.c \
             store_rocks/store_rocks_filter.c
CONFIG_SRC := config/config.c config/config_env.c config/config_fields.c config/config_keys.c \
              config/config_tables.c config/config_rules.c config/config_reload.c \
              config/config_load.c
SIDECAR_SRC := sidecar/log.c sidecar/offsets.c sidecar/headers.c sidecar/kafka.c \
               sidecar/metrics.c sidecar/metrics_stats.c sidecar/metrics_render.c \
               sidecar/http.c sidecar/recovery.c sidecar/recovery_read.c \
               sidecar/recovery_runs.c sidecar/recovery_orphans.c sidecar/recovery_history_read.c \
               sidecar/recovery_history_window.c sidecar/recovery_history.c \
               sidecar/recovery_since.c sidecar/recovery_new.c sidecar/held.c sidecar/signing.c sidecar/pipeline.c sidecar/pipeline_status.c sidecar/pipeline_consume.c \
               sidecar/pipeline_claim.c sidecar/pipeline_resolve.c sidecar/pipeline_store.c sidecar/pipeline_conflict.c sidecar/pipeline_produce.c sidecar/pipeline_deliver.c sidecar/pipeline_msg.c \
               sidecar/pipeline_retry.c sidecar/pipeline_failure.c \
               sidecar/pipeline_receipts.c sidecar/pipeline_ahead.c \
               sidecar/pipeline_handover.c sidecar/pipeline_rebalance.c sidecar/pipeline_own.c \
               sidecar/pipeline_flow.c sidecar/pipeline_gate.c \
               sidecar/harden.c sidecar/keysrc.c sidecar/reload.c \
               sidecar/admin.c sidecar/receipt.c sidecar/forgets.c sidecar/pipeline_txn.c

# The binary's sub-commands besides the sidecar (kdedup demo, mock, lookup):
# linked into kdedup only, not into the pipeline's library the tests and
# benchmarks link.
TOOLS_SRC := tools/demo.c tools/mockd.c tools/lookup.c

LIBS_DEDUP := $(call pc_libs,$(PKGS_DEDUP))
LIBS_ROCKS := $(call pc_libs,$(PKGS_ROCKS))
LIBS_CONFIG := $(call pc_libs,$(PKGS_CONFIG))
LIBS_KAFKA := $(call pc_libs,$(PKGS_KAFKA))
# Everything the sidecar links, in dependency order.
LIBS_ALL := $(LIB_SIDECAR) $(LIB_CONFIG) $(LIB_ROCKS) $(LIB_DEDUP)
LDLIBS_ALL := $(LIBS_KAFKA) $(call pc_libs,$(PKGS_HTTP)) $(LIBS_CONFIG) $(LIBS_ROCKS) \
              $(LIBS_DEDUP)
LIBS_TEST  := $(call pc_libs,$(PKGS_TEST))

UNIT_TESTS := $(BUILD)/tests/test_entry $(BUILD)/tests/test_dedup \
              $(BUILD)/tests/test_store_rocks $(BUILD)/tests/test_config \
              $(BUILD)/tests/test_offsets $(BUILD)/tests/test_metrics $(BUILD)/tests/test_held \
              $(BUILD)/tests/test_http $(BUILD)/tests/test_keysrc $(BUILD)/tests/test_admin \
              $(BUILD)/tests/test_log $(BUILD)/tests/test_receipt $(BUILD)/tests/test_signing \
              $(BUILD)/tests/test_headers $(BUILD)/tests/test_case_runner
INTEGRATION_TESTS := $(BUILD)/tests/test_pipeline $(BUILD)/tests/test_bounds \
                     $(BUILD)/tests/test_recovery $(BUILD)/tests/test_limits \
                     $(BUILD)/tests/test_crash
TESTS := $(UNIT_TESTS) $(INTEGRATION_TESTS)
# The real binary against an independent client (Debian's kafka-python), and
# the deploy/ manifests, configs and image checked offline.
E2E_TESTS := tests/e2e/e2e_test.py tests/e2e/faults_test.py tests/e2e/security_test.py \
             tests/e2e/seams_test.py tests/e2e/chaos_test.py tests/e2e/keys_test.py \
             tests/e2e/admin_test.py tests/e2e/probes_test.py tests/e2e/demo_test.py \
             tests/e2e/logs_test.py tests/e2e/lookup_test.py tests/docs/test_docs.sh \
             tests/docs/test_quickstart.sh tests/deploy/test_deploy.sh \
             tests/image/test_hardening.sh tests/mutate/test_table.sh
# Instructions per message under callgrind, against bench/instructions-small.json
# (PERF= leaves it out). It was out of make test while the same code counted
# 71,379 to 111,658: under valgrind's slowdown most store writes outlasted
# 200 ms, and each paused the partitions, which made librdkafka fetch their
# backlog again; since 3b7caba two runs agree within 2.3%.
# Not under SANITIZE: valgrind and ASan do not mix; alone: another test
# beside it changes the batching.
PERF ?= 1
PERF_TESTS := $(if $(SANITIZE),,$(if $(PERF),tests/perf/instructions_test.sh))
BENCHES := $(BUILD)/bench/bench_store $(BUILD)/bench/bench_e2e $(BUILD)/bench/bench_handover
FUZZERS := $(BUILD)/fuzz/fuzz_entry $(BUILD)/fuzz/fuzz_config $(BUILD)/fuzz/fuzz_headers \
           $(BUILD)/fuzz/fuzz_keysrc $(BUILD)/fuzz/fuzz_receipt

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

.PHONY: all deps test test-mock test-kafka test-asan kafka-up kafka-down chaos-kafka soak soak-memory chaos mutate valgrind bench bench-e2e bench-handover demo fuzz fuzz-build format format-check clean help
.PHONY: image image-test bench-e2e-kafka bench-instructions docs FORCE
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory build-all

.PHONY: build-all
build-all: $(KDEDUP) $(TESTS) $(BENCHES) $(FIND_SINCE) $(DEAD_CLAIM)

help:
	@echo "make            build libraries, tests and benchmarks into $(BUILD)/"
	@echo "make demo       build kdedup and run its demo (DEMO_ARGS=\"--messages N\")"
	@echo "make test       build and run every test (installs packages first): test-mock, test-kafka"
	@echo "make test-mock  the unit tests and the suites on librdkafka's mock cluster"
	@echo "make test-kafka the end-to-end suites on Apache Kafka (one node, then three)"
	@echo "make kafka-up   Apache Kafka on 127.0.0.1 (KAFKA_NODES=1|3); kafka-down stops it"
	@echo "make chaos-kafka  the chaos test on three Apache Kafka brokers, SEEDS=N seeds"
	@echo "                (DELIVERY=transactional: in the transactional mode)"
	@echo "make soak       the e2e crash test with SOAK_CYCLES (20) kill -9 cycles"
	@echo "make soak-memory  10 minutes of load and faults; RSS sampled and plotted"
	@echo "make chaos      the seeded chaos test, SEEDS=N seeds (CHAOS_FIRST, CHAOS_SECONDS)"
	@echo "make mutate     break each guard in tests/mutate/mutations.jsonl; its test must fail"
	@echo "make valgrind   run the unit tests under valgrind memcheck"
	@echo "make bench      run the store and end-to-end benchmarks (BENCHMARKS.md)"
	@echo "make bench-e2e  kdedup against a plain passthrough (BENCH_E2E_ARGS=...)"
	@echo "make bench-e2e-kafka  the same on a fresh Apache Kafka node (BENCH_E2E_KAFKA_ARGS=...)"
	@echo "make bench-instructions  instructions per message under callgrind, kdedup and the passthrough"
	@echo "make bench-handover  an empty replica learning 10^6 keys (BENCH_HANDOVER_ARGS=...)"
	@echo "make fuzz       run the libFuzzer targets for FUZZ_SECONDS each (clang)"
	@echo "make deps       install missing Debian packages (root) or print the command"
	@echo "make image      build the container image $(IMAGE) with podman (root)"
	@echo "make image-test build it, then run it as Kubernetes does and check it"
	@echo "make docs       render docs/architecture.png from docs/architecture.dot"
	@echo "make format-check / format   clang-format check / rewrite"
	@echo "switches: WERROR=1 SANITIZE=address,undefined HARDEN=0 BUILD=dir"

# Installs what is missing; quick when nothing is.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; \
	  done; \
	  for c in $(DEB_COMMANDS); do \
	    command -v $${c%%:*} >/dev/null 2>&1 || echo $${c#*:}; \
	  done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "deps: installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "deps: missing packages; run: sudo apt-get install -y $$missing"; exit 1; \
	  fi; \
	fi
	@$(RIG) fetch

FORCE:

$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(FLAGS_BUILT)' | cmp -s - $@ || echo '$(FLAGS_BUILT)' >$@

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -c $< -o $@

$(BUILD)/obj/store_rocks/%.o: EXTRA_CFLAGS = $(call pc_cflags,$(PKGS_ROCKS))
$(BUILD)/obj/config/%.o: EXTRA_CFLAGS = $(call pc_cflags,$(PKGS_CONFIG))
$(BUILD)/obj/sidecar/%.o: EXTRA_CFLAGS = $(call pc_cflags,$(PKGS_KAFKA) $(PKGS_CONFIG) $(PKGS_HTTP))
$(BUILD)/obj/tests/%.o: EXTRA_CFLAGS = $(call pc_cflags,$(PKGS_TEST) $(PKGS_ROCKS) $(PKGS_KAFKA))

$(LIB_DEDUP): $(call obj,$(DEDUP_SRC))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(LIB_ROCKS): $(call obj,$(ROCKS_SRC))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(LIB_CONFIG): $(call obj,$(CONFIG_SRC))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(LIB_SIDECAR): $(call obj,$(SIDECAR_SRC))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(KDEDUP): $(call obj,sidecar/main.c $(TOOLS_SRC)) $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(FIND_SINCE): $(call obj,tests/kafka/find_since.c) $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(DEAD_CLAIM): $(call obj,tests/kafka/dead_claim.c) $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

# One cmocka binary per module, linking only that module (and what it stands on).
$(BUILD)/tests/test_entry: $(call obj,tests/test_entry.c) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_DEDUP) $(LIBS_TEST)

$(BUILD)/tests/test_dedup: $(call obj,tests/test_dedup.c tests/test_dedup_contract.c tests/test_dedup_batches.c \
                                      tests/test_dedup_forgets.c tests/dedup_cases.c tests/dedup_fixture.c) \
                           $(LIB_ROCKS) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_ROCKS) $(LIBS_DEDUP) $(LIBS_TEST)

$(BUILD)/tests/test_store_rocks: $(call obj,tests/test_store_rocks.c tests/test_store_rocks_durability.c \
                                           tests/test_store_rocks_filter.c tests/dedup_fixture.c) \
                                 $(LIB_ROCKS) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_ROCKS) $(LIBS_DEDUP) $(LIBS_TEST)

$(BUILD)/tests/test_config: $(call obj,tests/test_config.c tests/test_config_load.c tests/test_config_values.c \
                                       tests/test_config_routes.c tests/config_fixture.c) $(LIB_CONFIG)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CONFIG) $(LIBS_TEST)

$(BUILD)/tests/test_offsets: $(call obj,tests/test_offsets.c sidecar/offsets.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_TEST)

$(BUILD)/tests/test_held: $(call obj,tests/test_held.c sidecar/held.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_TEST)

# The integration suites' case runner: which aborts run a case again.
$(BUILD)/tests/test_case_runner: $(call obj,tests/test_case_runner.c tests/case_runner.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_TEST)

# Key sources and fingerprints: keysrc.c alone, over routes parsed from text.
$(BUILD)/tests/test_keysrc: $(call obj,tests/test_keysrc.c sidecar/keysrc.c) $(LIB_CONFIG) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CONFIG) $(LIBS_DEDUP) $(LIBS_TEST)

$(BUILD)/tests/test_metrics: $(call obj,tests/test_metrics.c sidecar/metrics.c \
                                 sidecar/metrics_stats.c sidecar/metrics_render.c) $(LIB_CONFIG)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CONFIG) $(LIBS_TEST)

# Logging: rate-limited events, numeric fields.
$(BUILD)/tests/test_log: $(call obj,tests/test_log.c sidecar/log.c) $(LIB_CONFIG) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CONFIG) $(LIBS_TEST)

# The HTTP endpoint in a child process, against 600 slow clients.
$(BUILD)/tests/test_http: $(call obj,tests/test_http.c sidecar/http.c sidecar/log.c) \
                          $(LIB_CONFIG) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(call pc_libs,$(PKGS_HTTP)) $(LIBS_CONFIG) $(LIBS_TEST)

$(BUILD)/tests/test_receipt: $(call obj,tests/test_receipt.c sidecar/receipt.c dedup/fmt.c dedup/hex.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_TEST)

# Signatures: signing.c over libcrypto: each covered field, malformed
# signatures, and HMAC-SHA256 as libcrypto makes it, whatever the key's length.
$(BUILD)/tests/test_signing: $(call obj,tests/test_signing.c sidecar/signing.c) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_DEDUP) $(LIBS_TEST)

# The downstream record's headers: headers.c over librdkafka's header lists
# (no broker), built, read back and verified (signing.c: the MAC).
$(BUILD)/tests/test_headers: $(call obj,tests/test_headers.c sidecar/headers.c sidecar/signing.c) \
                             $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_KAFKA) $(LIBS_DEDUP) $(LIBS_TEST)

# The admin API and reloads, over an in-memory store (kafka.c checks the
# librdkafka properties of a reloaded file, as --check-config does).
$(BUILD)/tests/test_admin: $(call obj,tests/test_admin.c sidecar/admin.c sidecar/http.c \
                                      sidecar/log.c sidecar/reload.c sidecar/kafka.c \
                                      sidecar/keysrc.c sidecar/receipt.c) \
                           $(LIB_CONFIG) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_KAFKA) $(call pc_libs,$(PKGS_HTTP)) $(LIBS_CONFIG) \
	    $(LIBS_DEDUP) $(LIBS_TEST)

# Integration: the pipeline against a mock cluster in a `kdedup mock` process.
$(BUILD)/tests/test_pipeline: $(call obj,tests/test_pipeline.c tests/test_pipeline_delivery.c \
                                         tests/test_pipeline_orphans.c tests/test_pipeline_handover.c \
                                         tests/test_pipeline_stall.c tests/test_pipeline_txn.c tests/test_pipeline_reads.c \
                                         tests/test_pipeline_forgets.c \
                                         tests/pipeline_fixture.c tests/kafka_fixture.c tests/faulty_store.c \
                                         tests/dedup_fixture.c tests/case_runner.c) \
                              $(LIBS_ALL) | $(KDEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS_ALL) $(LIBS_TEST)

# Memory bounds and flow control, against the same mock cluster.
$(BUILD)/tests/test_bounds: $(call obj,tests/test_bounds.c tests/test_bounds_scans.c tests/test_bounds_flow.c \
                                       tests/pipeline_fixture.c tests/kafka_fixture.c tests/faulty_store.c \
                                       tests/dedup_fixture.c tests/case_runner.c) \
                            $(LIBS_ALL) | $(KDEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS_ALL) $(LIBS_TEST)

# Power loss (tests/powerloss_store.c) and ownership changes, against the
# same mock cluster.
$(BUILD)/tests/test_crash: $(call obj,tests/test_crash.c tests/test_crash_powerloss.c tests/test_crash_ownership.c \
                                      tests/crash_fixture.c tests/kafka_fixture.c tests/powerloss_store.c \
                                      tests/faulty_store.c tests/dedup_fixture.c) \
                           $(LIBS_ALL) | $(KDEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS_ALL) $(LIBS_TEST)

# What recovery believes of a downstream topic (signatures), on the same
# mock cluster.
$(BUILD)/tests/test_recovery: $(call obj,tests/test_recovery.c tests/kafka_fixture.c \
                                         tests/faulty_store.c tests/dedup_fixture.c tests/case_runner.c) \
                              $(LIBS_ALL) | $(KDEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS_ALL) $(LIBS_TEST)

# Limits set low, seen to act (max_retrying, a pending handover's pause), on
# the same mock cluster.
$(BUILD)/tests/test_limits: $(call obj,tests/test_limits.c tests/kafka_fixture.c \
                                       tests/faulty_store.c tests/dedup_fixture.c tests/case_runner.c) \
                            $(LIBS_ALL) | $(KDEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS_ALL) $(LIBS_TEST)

$(BUILD)/bench/bench_store: $(call obj,bench/bench_store.c) $(LIB_ROCKS) $(LIB_DEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_ROCKS) $(LIBS_DEDUP)
$(BUILD)/obj/bench/%.o: EXTRA_CFLAGS = $(call pc_cflags,$(PKGS_ROCKS) $(PKGS_KAFKA))

$(BUILD)/bench/bench_handover: $(call obj,bench/bench_handover.c bench/admin.c) $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS_ALL)

$(BUILD)/bench/bench_e2e: $(call obj,bench/bench_e2e.c bench/bench_e2e_child.c \
                                   bench/bench_e2e_cluster.c bench/bench_e2e_rounds.c \
                                   bench/passthrough.c bench/admin.c) \
                          $(LIBS_ALL) \
                          | $(KDEDUP)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS_ALL)

# The whole suite: on librdkafka's mock cluster, then on Apache Kafka.
test: deps
	@$(MAKE) --no-print-directory test-mock
	@$(MAKE) --no-print-directory test-kafka

# TEST_JOBS tests at a time, the longest first (LONGEST_TESTS, in the order
# of their wall times in a run of make test-mock): they mostly wait (group
# joins, timeouts; the whole of test-mock used 175 s of CPU in 511 s at 2 a
# time), and each starts a mock cluster of its own. test_pipeline and
# test_bounds run KD_TEST_JOBS (4) of their cases at a time
# (tests/case_runner.c).
TEST_JOBS ?= 3
LONGEST_TESTS := $(BUILD)/tests/test_pipeline tests/e2e/seams_test.py \
                 tests/e2e/faults_test.py tests/e2e/chaos_test.py $(BUILD)/tests/test_crash \
                 tests/e2e/e2e_test.py tests/e2e/admin_test.py $(BUILD)/tests/test_http
test-mock: deps
	@$(MAKE) --no-print-directory $(KDEDUP) $(TESTS) $(BUILD)/bench/bench_e2e
	@KDEDUP=$(KDEDUP) TEST_JOBS=$(TEST_JOBS) tests/run_tests.sh $(LONGEST_TESTS) \
	    $(filter-out $(LONGEST_TESTS),$(INTEGRATION_TESTS) $(E2E_TESTS) $(UNIT_TESTS))
	@$(if $(PERF_TESTS),KDEDUP=$(KDEDUP) TEST_JOBS=1 tests/run_tests.sh $(PERF_TESTS))

# CI's pass under SANITIZE=address,undefined: the unit tests, the power-loss
# suite and the end-to-end suite on the mock. The other mock-cluster suites
# are timing-bound, and ASan's slowdown shows three open findings there
# (RELIABILITY, "Open findings under ASan"), not memory errors. Two at a
# time: ASan's slowdown is CPU.
ASAN_TESTS := $(UNIT_TESTS) $(BUILD)/tests/test_crash tests/e2e/e2e_test.py
test-asan: deps
	@$(MAKE) --no-print-directory $(KDEDUP) $(filter $(BUILD)/%,$(ASAN_TESTS))
	@KDEDUP=$(KDEDUP) TEST_JOBS=2 tests/run_tests.sh $(ASAN_TESTS)

# Apache Kafka (tests/kafka/rig.py): the broker pinned by tests/kafka/pom.xml,
# its jars in a cache outside the tree (make deps fetches them once), KRaft
# nodes on 127.0.0.1 with data in a temporary folder. kafka-up prints the
# bootstrap address and writes it to $(KAFKA_DIR)/bootstrap.
RIG := /usr/bin/python3 tests/kafka/rig.py
KAFKA_NODES ?= 1
KAFKA_DIR ?= $(BUILD)/kafka
KAFKA_TOPICS ?= orders:4 orders.deduped:4 orders.dlq:1
kafka-up: deps
	@KDEDUP_KAFKA_DIR=$(abspath $(KAFKA_DIR)) $(RIG) up --nodes $(KAFKA_NODES) \
	    $(foreach t,$(KAFKA_TOPICS),--topic $(t))

kafka-down:
	@KDEDUP_KAFKA_DIR=$(abspath $(KAFKA_DIR)) $(RIG) down

test-kafka: deps
	@$(MAKE) --no-print-directory $(KDEDUP) $(FIND_SINCE) $(DEAD_CLAIM)
	@KDEDUP=$(KDEDUP) BUILD=$(BUILD) tests/kafka/test_kafka.sh

# The chaos test on three Apache Kafka brokers: SEEDS seeds from CHAOS_FIRST.
chaos-kafka: deps
	@$(MAKE) --no-print-directory $(KDEDUP)
	KDEDUP=$(KDEDUP) BUILD=$(BUILD) KAFKA_SUITES1= KAFKA_TXN_SUITES1= \
	    KAFKA_SUITES3=$(if $(filter transactional,$(DELIVERY)),,chaos_test) \
	    KAFKA_TXN_SUITES3=$(if $(filter transactional,$(DELIVERY)),chaos_test,) \
	    TEST_TIMEOUT=$$(($(SEEDS) * 150 + 600)) \
	    KD_CHAOS_SECONDS=$(CHAOS_SECONDS) \
	    KD_CHAOS_SEEDS="$$(seq $(CHAOS_FIRST) $$(($(CHAOS_FIRST) + $(SEEDS) - 1)))" \
	    KD_TXN_CHAOS_SEEDS="$$(seq $(CHAOS_FIRST) $$(($(CHAOS_FIRST) + $(SEEDS) - 1)))" \
	    tests/kafka/test_kafka.sh

# The long run of the crash test: kill -9 at random moments under load,
# SOAK_CYCLES times (the e2e test runs 3), then the whole oracle.
SOAK_CYCLES ?= 20
SOAK_SEED ?= 20261127
soak: deps
	@$(MAKE) --no-print-directory $(KDEDUP)
	KDEDUP=$(KDEDUP) KD_KILL_CYCLES=$(SOAK_CYCLES) KD_SEED=$(SOAK_SEED) \
	    /usr/bin/python3 tests/e2e/e2e_test.py

# The seeded chaos test (tests/e2e/chaos_test.py): SEEDS seeds from
# CHAOS_FIRST on, CHAOS_SECONDS of faults each; a failure prints its seed.
# `make test` runs a short fixed set of seeds as part of the e2e suite.
SEEDS ?= 10
CHAOS_FIRST ?= 1
CHAOS_SECONDS ?= 30
chaos: deps
	@$(MAKE) --no-print-directory $(KDEDUP)
	KDEDUP=$(KDEDUP) KD_CHAOS_SECONDS=$(CHAOS_SECONDS) \
	    KD_CHAOS_SEEDS="$$(seq $(CHAOS_FIRST) $$(($(CHAOS_FIRST) + $(SEEDS) - 1)))" \
	    /usr/bin/python3 tests/e2e/chaos_test.py

# The memory soak (tests/e2e/soak_memory.py): SOAK_MEMORY_SECONDS of steady
# load with faults in turns; RSS sampled and plotted into build/soak-memory/.
SOAK_MEMORY_SECONDS ?= 600
soak-memory: deps
	@dpkg-query -W -f='$${Status}' python3-matplotlib 2>/dev/null | grep -q 'ok installed' || \
	  { [ "$$(id -u)" = 0 ] && apt-get install -y -qq python3-matplotlib >/dev/null; } || \
	  echo "soak-memory: python3-matplotlib missing: no plot"
	@$(MAKE) --no-print-directory $(KDEDUP)
	KDEDUP=$(KDEDUP) SOAK_SECONDS=$(SOAK_MEMORY_SECONDS) SOAK_OUT=$(BUILD)/soak-memory \
	    /usr/bin/python3 tests/e2e/soak_memory.py

# Mutation testing (tests/mutate/mutate.py): each line of
# tests/mutate/mutations.jsonl breaks one guard, and its test must fail.
# MUTATE_JOBS mutations at a time, each in a worktree of HEAD of its own.
MUTATE_JOBS ?= 1
mutate: deps
	/usr/bin/python3 tests/mutate/mutate.py --jobs $(MUTATE_JOBS) $(MUTATIONS)

# The unit tests under memcheck; forked children (kill -9 and lock tests)
# exit without freeing what they inherited, so only the parent is judged.
VALGRIND := valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --child-silent-after-fork=yes --error-exitcode=99
# test_http is left out: its 600 slow connections run too slowly under
# memcheck for its own bounds (probes within 1 s, a stop within 10 s); it
# runs plain and under ASan/UBSan in `make test`.
VALGRIND_TESTS := $(filter-out $(BUILD)/tests/test_http,$(UNIT_TESTS))
valgrind: deps
	@$(MAKE) --no-print-directory $(VALGRIND_TESTS)
	@TEST_WRAPPER="$(VALGRIND)" tests/run_tests.sh $(VALGRIND_TESTS)

# docs/architecture.png from its graphviz source.
docs:
	dot -Tpng -Gdpi=110 docs/architecture.dot -o docs/architecture.png

# The README's first command: the whole pipeline on an embedded mock cluster.
DEMO_ARGS ?=
demo: deps
	@$(MAKE) --no-print-directory $(KDEDUP)
	$(KDEDUP) demo $(DEMO_ARGS)

# BENCH_E2E_ARGS for bench_e2e (see bench/bench_e2e.c); the default is the
# run BENCHMARKS.md reports: 300,000 messages, 3 rounds, 10^4 keys stored,
# then 10^6 and 10^7.
BENCH_E2E_ARGS ?= --stored 10000,1000000,10000000
bench: deps
	@$(MAKE) --no-print-directory $(BENCHES)
	$(BUILD)/bench/bench_store
	$(BUILD)/bench/bench_handover $(BENCH_HANDOVER_ARGS)
	@$(MAKE) --no-print-directory bench-e2e

bench-handover: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_handover
	$(BUILD)/bench/bench_handover $(BENCH_HANDOVER_ARGS)

bench-e2e: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_e2e
	KDEDUP=$(KDEDUP) $(BUILD)/bench/bench_e2e $(BENCH_E2E_ARGS)

# Instructions per consumed message under callgrind, kdedup against the
# passthrough, without and with a signing key (bench/instructions.py; counts
# are deterministic, whatever the load), checked against the figures
# recorded in bench/instructions*.json (fails on a regression over 10%).
# After a deliberate change, record new figures: bench/instructions.py
# [--signing] --record bench/instructions[-signing].json.
BENCH_INSTRUCTIONS_MESSAGES ?= 200000,50000
bench-instructions: deps
	@$(MAKE) --no-print-directory $(KDEDUP) $(BUILD)/bench/bench_e2e
	BUILD=$(BUILD) nice -n 19 /usr/bin/python3 bench/instructions.py \
	    --messages $(BENCH_INSTRUCTIONS_MESSAGES) --check bench/instructions.json
	BUILD=$(BUILD) nice -n 19 /usr/bin/python3 bench/instructions.py --signing \
	    --messages $(BENCH_INSTRUCTIONS_MESSAGES) --check bench/instructions-signing.json

# The same against Apache Kafka: a fresh single node (tests/kafka/with_kafka.sh).
BENCH_E2E_KAFKA_ARGS ?= --stored 10000,1000000
bench-e2e-kafka: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_e2e
	KDEDUP=$(KDEDUP) tests/kafka/with_kafka.sh 1 sh -c \
	    '$(BUILD)/bench/bench_e2e --bootstrap "$$KDEDUP_BOOTSTRAP" $(BENCH_E2E_KAFKA_ARGS)'

# libFuzzer needs clang; built apart from the rest. Every sanitizer report
# aborts, so a UBSan finding fails `make fuzz` like a crash does.
FUZZ_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -I. \
               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
$(BUILD)/fuzz/fuzz_entry: tests/fuzz/fuzz_entry.c dedup/entry.c dedup/store.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^

$(BUILD)/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(CONFIG_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(call pc_cflags,$(PKGS_CONFIG)) -o $@ $^ $(LIBS_CONFIG)

$(BUILD)/fuzz/fuzz_headers: tests/fuzz/fuzz_headers.c sidecar/headers.c sidecar/signing.c \
                          $(DEDUP_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(LIBS_KAFKA) $(LIBS_DEDUP)

$(BUILD)/fuzz/fuzz_keysrc: tests/fuzz/fuzz_keysrc.c sidecar/keysrc.c dedup/sha256.c $(CONFIG_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(call pc_cflags,$(PKGS_CONFIG)) -o $@ $^ $(LIBS_CONFIG) $(LIBS_DEDUP)

$(BUILD)/fuzz/fuzz_receipt: tests/fuzz/fuzz_receipt.c sidecar/receipt.c dedup/fmt.c dedup/hex.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^

fuzz-build: deps
	@$(MAKE) --no-print-directory $(FUZZERS)

fuzz: fuzz-build
	@for f in $(FUZZERS); do \
	  name=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$name; \
	  echo "fuzz: $$name for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      $(BUILD)/fuzz/corpus-$$name tests/fuzz/seeds/$$name >$(BUILD)/fuzz/$$name.log 2>&1 \
	    || { tail -50 $(BUILD)/fuzz/$$name.log; exit 1; }; \
	  grep -E '^stat::number_of_executed_units|^Done' $(BUILD)/fuzz/$$name.log; \
	done

# The container image (deploy/Dockerfile), with podman and no registry: the
# script makes the base images from the Debian archive; see its header.
IMAGE ?= kdedup:$(shell sed -n 's/^\#define KD_VERSION "\(.*\)"/\1/p' sidecar/version.h)
image:
	@BUILD=$(BUILD) IMAGE=$(IMAGE) tests/image/test_image.sh --build-only

image-test:
	@$(MAKE) --no-print-directory $(KDEDUP)
	@KDEDUP=$(KDEDUP) BUILD=$(BUILD) IMAGE=$(IMAGE) tests/image/test_image.sh

FORMAT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

format:
	clang-format -i $(FORMAT_SRC)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
