# pm: build, install, test. The two set-up commands of the README are `make install`
# and `make test`.
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
BINDIR = $(DESTDIR)$(PREFIX)/bin
MANDIR = $(DESTDIR)$(PREFIX)/share/man
BASHDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR = $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR = $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
TOOLS = pm-start pm-stop pm-status pm-stopall pm-signal pm-up pm-down pm-wait pm-restart pm-logs

.PHONY: all build install uninstall test man completions

all: build

build:
	$(CARGO) build --release --workspace

install: build
	install -d $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man7 $(BASHDIR) $(ZSHDIR) $(FISHDIR)
	for t in $(TOOLS); do install -m 755 target/release/$$t $(BINDIR)/$$t; done
	for t in $(TOOLS); do install -m 644 man/$$t.1 $(MANDIR)/man1/$$t.1; done
	install -m 644 man/pm.7 $(MANDIR)/man7/pm.7
	target/release/xtask completions target/completions
	for t in $(TOOLS); do \
	  install -m 644 target/completions/$$t.bash $(BASHDIR)/$$t; \
	  install -m 644 target/completions/_$$t $(ZSHDIR)/_$$t; \
	  install -m 644 target/completions/$$t.fish $(FISHDIR)/$$t.fish; \
	done

uninstall:
	for t in $(TOOLS); do rm -f $(BINDIR)/$$t $(MANDIR)/man1/$$t.1 $(BASHDIR)/$$t $(ZSHDIR)/_$$t $(FISHDIR)/$$t.fish; done
	rm -f $(MANDIR)/man7/pm.7

# Builds the binaries the end-to-end tests run, then runs every test of the workspace
# (then the end-to-end tests again with PM_CGROUP=off, so both trackings are tested, and the
# cgroup and supervision ones with PM_CLONE3=off, the fallback for kernels without
# clone3's CLONE_INTO_CGROUP). The
# install tests (man pages render, completions offer names) need an installed copy: unless
# PM_TEST_PREFIX names one already, a temporary prefix is filled first and removed after.
test:
	$(CARGO) build --workspace
	@skipped=$$(mktemp /tmp/pm-skipped.XXXXXX) && export PM_TEST_SKIPPED="$$skipped" && \
	trap 'rm -f "$$skipped"' EXIT && \
	if [ -n "$$PM_TEST_PREFIX" ]; then \
	  echo "$(CARGO) test --workspace   # install tests against $$PM_TEST_PREFIX"; \
	  $(CARGO) test --workspace; \
	else \
	  prefix=$$(mktemp -d /tmp/pm-prefix.XXXXXX) && trap 'rm -rf "$$prefix" "$$skipped"' EXIT && \
	  echo "make install PREFIX=$$prefix   # for the install tests" && \
	  $(MAKE) --no-print-directory install PREFIX="$$prefix" >/dev/null && \
	  export PM_TEST_PREFIX="$$prefix" && $(CARGO) test --workspace; \
	fi && \
	echo "PM_CGROUP=off $(CARGO) test -p pm-tests --test e2e   # again, with process-group tracking" && \
	PM_CGROUP=off $(CARGO) test -q -p pm-tests --test e2e && \
	echo "PM_CLONE3=off $(CARGO) test -p pm-tests --test e2e -- cgroup:: supervise::   # again, services moved into their cgroups, not born there" && \
	PM_CLONE3=off $(CARGO) test -q -p pm-tests --test e2e -- cgroup:: supervise:: && \
	if [ -s "$$skipped" ]; then \
	  echo "SKIPPED ($$(sort -u "$$skipped" | wc -l); cargo counts them as ok):"; sort -u "$$skipped" | sed 's/^/  /'; \
	else echo "no test skipped"; fi

# Regenerates man/*.1 from the clap definitions (a test fails when they are stale).
man:
	$(CARGO) run -q -p xtask -- man man
