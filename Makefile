# HomesteadGateway - see README.md. Targets: all run test asan tsan fuzz bench bench-compare
# chaos interop install deb clean (and all-tests, fuzzers: what test and fuzz build).
# `make run` and `make test` first install what is missing (scripts/deps.sh).

BUILD    ?= build
PREFIX   ?= /usr/local
SYSCONFDIR ?= /etc
FUZZ_SECONDS ?= 20
TEST_FUZZ_SECONDS ?= 10
CHAOS_SEED ?= 1
CC       ?= cc
SAN      ?=
WERROR   ?= $(if $(CI),-Werror,)
STACK    ?= 131072

CIVETWEB_VERSION := $(shell top=. && . third_party/civetweb.mk.sh && echo $$CIVETWEB_VERSION)
CIVETWEB_SRC     := third_party/src/civetweb
VERSION          := 0.1.0

WARN    := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wwrite-strings -Wformat=2 $(WERROR)
HARDEN  := -fstack-protector-strong -D_FORTIFY_SOURCE=2
OPT     := -O2 -g
ifneq ($(SAN),)
  OPT    := -O1 -g -fno-omit-frame-pointer -fsanitize=$(SAN)
  HARDEN := -fstack-protector-strong
  STACK  := 1048576
endif
CPPFLAGS := -D_GNU_SOURCE -DGW_VERSION='"$(VERSION)"' -Isrc -I$(BUILD)/civetweb/include -MMD -MP
TOOL_CPPFLAGS := -D_GNU_SOURCE -MMD -MP
CFLAGS   := -std=c11 $(OPT) $(WARN) $(HARDEN) -pthread
LDFLAGS  := $(if $(SAN),-fsanitize=$(SAN),) -pthread
LDLIBS   := -ljansson -linih -lsqlite3 -lm

# CivetWeb: the Debian source, our patches applied to a copy under $(BUILD).
CW_FLAGS := -DREENTRANT_TIME -DUSE_WEBSOCKET -DUSE_IPV6 -DNO_SSL -DNO_CGI -DNO_FILES -DNDEBUG \
            -DUSE_STACK_SIZE=$(STACK)
CW_CFLAGS := -std=gnu11 $(OPT) -w -pthread
CW_PATCHES := $(sort $(wildcard third_party/patches/*.patch))

# Each binary is linked from its own object list. The gateway is main.o and
# libgw.a (every src/*.c but main.c, and CivetWeb); the tools under src/tools/
# use no gateway module, only the client primitives of wsc.c, and link only
# the libraries they call.
GW_SRCS  := $(filter-out src/main.c,$(wildcard src/*.c))
GW_OBJS  := $(GW_SRCS:src/%.c=$(BUILD)/obj/%.o)
CW_OBJ   := $(BUILD)/obj/civetweb.o
LIB      := $(BUILD)/libgw.a

WSC_OBJS     := $(BUILD)/obj/tools/wsc.o
GATEWAY_OBJS := $(BUILD)/obj/main.o $(LIB)
CLIENT_OBJS  := $(addprefix $(BUILD)/obj/tools/,client.o client_conn.o client_msg.o) $(WSC_OBJS)
BENCH_OBJS   := $(addprefix $(BUILD)/obj/tools/,bench.o bench_peer.o bench_scenario.o \
                bench_thread.o bench_report.o) $(WSC_OBJS)
CLIENT_LIBS  := -ljansson
BENCH_LIBS   :=

UNIT_SRCS := $(wildcard test/test_*.c)
UNITS     := $(UNIT_SRCS:test/%.c=$(BUILD)/test/%)
IT_SRCS   := $(wildcard test/it_*.c)
ITS       := $(IT_SRCS:test/%.c=$(BUILD)/test/%)
TLIB_SRCS := test/wsclient.c test/harness.c test/itutil.c
TLIB_OBJS := $(TLIB_SRCS:test/%.c=$(BUILD)/test/obj/%.o)
TEST_OBJS := $(patsubst test/%.c,$(BUILD)/test/obj/%.o,$(UNIT_SRCS) $(IT_SRCS) $(TLIB_SRCS))

# The chaos test (test/chaos.c): not a test_* or it_* name, so run-tests.sh
# leaves it alone; `make chaos` runs it on its own.
CHAOS      := $(BUILD)/test/chaos
CHAOS_OBJS := $(BUILD)/test/obj/chaos.o $(BUILD)/test/obj/harness.o $(BUILD)/test/obj/wsclient.o \
              $(WSC_OBJS)

# The interop driver (test/interop.c): runs the example clients of
# test/interop/ against the gateway; `make interop` runs it.
INTEROP      := $(BUILD)/test/interop
INTEROP_OBJS := $(BUILD)/test/obj/interop.o $(BUILD)/test/obj/harness.o $(BUILD)/test/obj/wsclient.o \
                $(WSC_OBJS)

# libFuzzer harnesses: clang, objects of their own (every one instrumented)
# under $(BUILD)/fuzz/obj/, binaries in $(BUILD)/fuzz/. The protocol's sources
# are a wildcard so that they follow protocol.c's split into proto_*.c and the
# time functions' clock.c, before and after.
FUZZ_CC       ?= clang
FUZZ_CPPFLAGS := -D_GNU_SOURCE -Isrc -MMD -MP
FUZZ_CFLAGS   := -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
FUZZ_PROTOCOL_SRCS := test/fuzz_protocol.c $(wildcard src/protocol.c src/proto_*.c src/clock.c)
FUZZ_CONFIG_SRCS   := test/fuzz_config.c src/config.c src/log.c src/path.c $(wildcard src/clock.c)
FUZZ_PROTOCOL_OBJS := $(FUZZ_PROTOCOL_SRCS:%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_CONFIG_OBJS   := $(FUZZ_CONFIG_SRCS:%.c=$(BUILD)/fuzz/obj/%.o)
FUZZERS := $(BUILD)/fuzz/fuzz_protocol $(BUILD)/fuzz/fuzz_config

BINS := $(BUILD)/homestead-gateway $(BUILD)/homestead-client $(BUILD)/homestead-bench

Q := $(if $(V),,@)
.SECONDARY:
.PHONY: all deps run test all-tests chaos interop asan tsan bench bench-compare fuzz fuzzers \
        install uninstall deb clean distclean
.DEFAULT_GOAL := all

all: $(BINS)

deps:
	$(Q)sh scripts/deps.sh

# Embedded defaults (data and logs beside the binary); CONFIG=etc/gateway.ini to use a file.
run: deps
	$(Q)$(MAKE) --no-print-directory all
	./$(BUILD)/homestead-gateway $(if $(CONFIG),-c $(CONFIG),)

bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sh scripts/bench.sh $(BUILD)

# The same scenarios against the Go and Node reference gateways in scripts/bench-ref;
# the script installs their Debian packages itself (scripts/bench-compare.sh).
bench-compare: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sh scripts/bench-compare.sh $(BUILD)

test: deps
	$(Q)$(MAKE) --no-print-directory all-tests
	$(Q)GW_BIN=$(BUILD)/homestead-gateway sh scripts/run-tests.sh $(BUILD)
	$(Q)$(if $(SAN),,$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS))

all-tests: $(BINS) $(UNITS) $(ITS) $(CHAOS) $(INTEROP)

# Kills, restarts, resets and stalls the real gateway for about 90 s while
# mods and a bot check that no acked message is lost, doubled or reordered;
# the schedule comes from CHAOS_SEED.
chaos: deps
	$(Q)$(MAKE) -s --no-print-directory $(BUILD)/homestead-gateway $(CHAOS)
	$(Q)$(CHAOS) --gateway $(BUILD)/homestead-gateway --seed $(CHAOS_SEED)

# The example clients for mod and bot authors (test/interop/: a Java mod, a
# Node bot, a Python bot) against the real gateway: Java x Node and Java x
# Python, 200 messages each way, pings, resets and resume (test/interop.c).
# Installs the JDK, Node, aiohttp and the Node bot's `ws` when missing.
interop: deps
	$(Q)sh scripts/interop-deps.sh
	$(Q)$(MAKE) -s --no-print-directory $(BUILD)/homestead-gateway $(INTEROP)
	$(Q)$(INTEROP) --gateway $(BUILD)/homestead-gateway --examples test/interop

asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build/asan SAN=address,undefined test

tsan:
	$(Q)TSAN_OPTIONS="suppressions=$(CURDIR)/test/tsan.supp second_deadlock_stack=1 $(TSAN_OPTIONS)" \
	 $(MAKE) --no-print-directory BUILD=build/tsan SAN=thread test

# The pristine source is copied and patched under $(BUILD)/civetweb.
CW_STAMP := $(BUILD)/civetweb/.patched
$(CW_STAMP): $(CIVETWEB_SRC)/src/civetweb.c $(CW_PATCHES)
	@echo "  PATCH   civetweb $(CIVETWEB_VERSION)"
	$(Q)rm -rf $(BUILD)/civetweb && mkdir -p $(BUILD)/civetweb
	$(Q)cp -r $(CIVETWEB_SRC)/src $(CIVETWEB_SRC)/include $(BUILD)/civetweb/
	$(Q)for p in $(CW_PATCHES); do patch -s -p1 -d $(BUILD)/civetweb < $$p || exit 1; done
	$(Q)touch $@

$(CIVETWEB_SRC)/src/civetweb.c:
	$(Q)sh scripts/deps.sh

$(CW_OBJ): $(CW_STAMP)
	@echo "  CC      civetweb.c (patched)"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CW_CFLAGS) $(CW_FLAGS) -I$(BUILD)/civetweb/include -c $(BUILD)/civetweb/src/civetweb.c -o $@

$(BUILD)/obj/%.o: src/%.c | $(CW_STAMP)
	@echo "  CC      $<"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# The tools see no gateway header and need no CivetWeb.
$(BUILD)/obj/tools/%.o: src/tools/%.c
	@echo "  CC      $<"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(TOOL_CPPFLAGS) $(CFLAGS) -c $< -o $@

# Rebuilt when the Makefile changes too: its member list is written here.
$(LIB): $(GW_OBJS) $(CW_OBJ) Makefile
	$(Q)rm -f $@ && ar rcs $@ $(filter %.o,$^)

$(BUILD)/homestead-gateway: $(GATEWAY_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/homestead-client: $(CLIENT_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) $^ $(CLIENT_LIBS) -o $@

$(BUILD)/homestead-bench: $(BENCH_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) $^ $(BENCH_LIBS) -o $@

$(BUILD)/test/obj/%.o: test/%.c | $(CW_STAMP)
	@echo "  CC      $<"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CPPFLAGS) -Itest -Isrc/tools $(CFLAGS) -c $< -o $@

$(BUILD)/test/test_%: $(BUILD)/test/obj/test_%.o $(LIB)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -o $@

$(BUILD)/test/test_wsc: $(BUILD)/test/obj/test_wsc.o $(WSC_OBJS)
	$(Q)$(CC) $(LDFLAGS) $^ -lcmocka -o $@

$(BUILD)/test/test_wsclient: $(BUILD)/test/obj/test_wsclient.o $(BUILD)/test/obj/wsclient.o $(WSC_OBJS)
	$(Q)$(CC) $(LDFLAGS) $^ -lcmocka -o $@

$(BUILD)/test/it_%: $(BUILD)/test/obj/it_%.o $(TLIB_OBJS) $(WSC_OBJS) $(LIB)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -o $@

$(CHAOS): $(CHAOS_OBJS)
	$(Q)$(CC) $(LDFLAGS) $^ -o $@

$(INTEROP): $(INTEROP_OBJS)
	$(Q)$(CC) $(LDFLAGS) $^ -ljansson -o $@

# libFuzzer harnesses for the protocol decoder and the config parser; fuzz
# runs each FUZZ_SECONDS on a temporary copy of its corpus under test/data/fuzz
# (scripts/fuzz.sh).
fuzz: $(FUZZERS)
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) sh scripts/fuzz.sh $(BUILD)

fuzzers: $(FUZZERS)

$(BUILD)/fuzz/obj/%.o: %.c
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) not found (apt-get install clang)" >&2; exit 2; }
	@echo "  FUZZCC  $<"
	$(Q)mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -c $< -o $@

$(BUILD)/fuzz/fuzz_protocol: $(FUZZ_PROTOCOL_OBJS)
	@echo "  FUZZLD  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $^ -ljansson -o $@

$(BUILD)/fuzz/fuzz_config: $(FUZZ_CONFIG_OBJS)
	@echo "  FUZZLD  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $^ -linih -o $@

install: all
	$(Q)install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system \
	    $(DESTDIR)$(PREFIX)/share/homestead-gateway $(DESTDIR)$(PREFIX)/share/doc/homestead-gateway \
	    $(DESTDIR)$(SYSCONFDIR)/homestead-gateway
	$(Q)install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	$(Q)sed 's|/usr/local|$(PREFIX)|g; s|/etc/homestead-gateway|$(SYSCONFDIR)/homestead-gateway|g' \
	    etc/homestead-gateway.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/homestead-gateway.service
	$(Q)chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/homestead-gateway.service
	$(Q)install -m 0644 etc/gateway.ini etc/gateway-production.ini etc/nginx.conf etc/Caddyfile \
	    $(DESTDIR)$(PREFIX)/share/homestead-gateway/
	$(Q)install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/homestead-gateway/
	$(Q)test -e $(DESTDIR)$(SYSCONFDIR)/homestead-gateway/gateway.ini || \
	    install -m 0640 etc/gateway-production.ini $(DESTDIR)$(SYSCONFDIR)/homestead-gateway/gateway.ini
	@echo "  INSTALL $(DESTDIR)$(PREFIX)/bin/homestead-gateway (see README.md, Operations)"

# A Debian package, build/homestead-gateway_$(VERSION)_ARCH.deb, of this
# build's binaries, the unit and the production config (scripts/deb.sh,
# etc/deb/); scripts/deb-check.sh installs, runs and purges it.
deb: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sh scripts/deb.sh $(BUILD) $(VERSION)

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,homestead-gateway homestead-client homestead-bench)
	rm -f $(DESTDIR)$(PREFIX)/lib/systemd/system/homestead-gateway.service
	rm -rf $(DESTDIR)$(PREFIX)/share/homestead-gateway $(DESTDIR)$(PREFIX)/share/doc/homestead-gateway

# Only $(BUILD): make clean BUILD=build/asan leaves the other builds alone.
clean:
	$(if $(strip $(BUILD)),rm -rf $(BUILD),$(error BUILD is empty))

distclean: clean
	rm -rf third_party/src

# The compiler's dependency files (-MMD -MP), one beside each object built
# from our sources; those not made yet are skipped.
DEPS := $(patsubst %.o,%.d,$(sort $(GW_OBJS) $(filter %.o,$(GATEWAY_OBJS) $(CLIENT_OBJS) \
          $(BENCH_OBJS)) $(TEST_OBJS) $(CHAOS_OBJS) $(INTEROP_OBJS) $(FUZZ_PROTOCOL_OBJS) $(FUZZ_CONFIG_OBJS)))
-include $(DEPS)
