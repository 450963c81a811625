# cairn — build, test, demo, install, package. `make demo` and `make test` are the README's
# quick start; `make deb` and `make install` are its Install section.
SHELL := /bin/bash
CARGO ?= cargo

# --- Where `make install` puts things. Every directory can be overridden on the command
# line (`make install PREFIX=/usr SYSTEMDUNITDIR=/lib/systemd/system`); DESTDIR is
# prepended to all of them (staged installs, packaging) and never written into a file.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
# systemd reads units, sysusers.d, tmpfiles.d and catalogs below /usr/local/lib too.
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
CATALOGDIR ?= $(PREFIX)/lib/systemd/catalog
# Debian's dbus-daemon reads /usr/share/dbus-1/system.d and /etc/dbus-1/system.d only: with
# PREFIX=/usr/local, give DBUSPOLICYDIR=/etc/dbus-1/system.d for the policy to take effect.
DBUSPOLICYDIR ?= $(DATADIR)/dbus-1/system.d
# The sudoers template, for reference and `cairn setup --sudoers-template` (setup has the
# same template built in: it needs no file).
PKGDATADIR ?= $(DATADIR)/cairn
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/vendor-completions
# `yes`: man pages gzip-compressed (as Debian wants them; `make deb` sets it).
MANGZ ?= no
INSTALL ?= install

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_DIR := $(TARGET_DIR)/release
BINS := cairn cairn-preflight cairn-quiesce cairn-snapshot cairn-upload cairn-drill cairn-heartbeat
UNITS := $(sort $(notdir $(wildcard units/*.service units/*.timer)))
MANPAGES := $(sort $(wildcard man/*.[578]))
CATALOG := $(wildcard catalog/cairn.catalog)
COMPLETIONS_SCRIPT := $(wildcard scripts/completions.sh)

# --- The Debian package (`make deb`).
DEB_VERSION = $(shell awk -F'"' '/^\[/ { s = $$0 } s == "[workspace.package]" && /^version *=/ { print $$2; exit }' Cargo.toml)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB_DIR := $(TARGET_DIR)/debian
DEB = $(DEB_DIR)/cairn_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_ROOT = $(DEB_DIR)/cairn_$(DEB_VERSION)_$(DEB_ARCH)
DEB_MAINTAINER ?= cairn developers <root@localhost>
DEB_COMPRESS ?= xz
# Everything the package is made of: it is rebuilt when one of them changed.
DEB_INPUTS = $(addprefix $(RELEASE_DIR)/,$(BINS)) $(addprefix units/,$(UNITS)) $(MANPAGES) \
	$(CATALOG) $(COMPLETIONS_SCRIPT) sysusers.d/cairn.conf tmpfiles.d/cairn.conf \
	dbus/org.cairn.Pipeline1.conf sudoers.d/cairn.in $(wildcard packaging/debian/*) \
	Cargo.toml Makefile

.PHONY: all build release test test-e2e catalog lint unit demo clean deps test-deps install \
	uninstall deb release-bins

all: build

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --workspace --release

# The Debian packages building needs (only the missing ones are installed).
deps:
	scripts/deps.sh build

# ...and those the tests need (database servers, MTA, mkfs, nspawn, Python packages).
test-deps:
	scripts/deps.sh test

# Every test: formatting, lints, then the whole suite (unit and end-to-end) with nextest.
# The end-to-end tests run the binaries, so they are built first.
test: test-deps
	$(MAKE) lint build
	$(CARGO) nextest run --workspace --no-fail-fast

# Only the end-to-end tests of the installed package on a booted systemd (the pipeline
# fired by its timer and the failure matrix, and the package's install and removal);
# `make test` runs them too.
test-e2e: test-deps
	$(MAKE) build
	$(CARGO) nextest run -p cairn-tests --no-fail-fast --test e2e_pipeline --test package

# Regenerate catalog/cairn.catalog from the table of message ids (core/src/stage/msg.rs);
# a test fails while the committed file differs.
catalog:
	CAIRN_UPDATE_CATALOG=1 $(CARGO) nextest run -p cairn-tests --test catalog committed_catalog_is_generated_from_msg_rs

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# A real backup and restore on an embedded sample tree (and /etc when run as root),
# in a scratch directory; nothing outside it is changed.
demo: deps
	$(MAKE) release
	CAIRN_BIN_DIR=$(CURDIR)/target/release scripts/demo.sh

clean:
	$(CARGO) clean

# The release binaries, up to date: built by cargo when it is on PATH (a no-op when
# nothing changed); without cargo (`sudo make install` often has none), the ones an
# earlier `make release` built.
release-bins:
	@if command -v $(CARGO) >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory release; \
	else \
		for b in $(BINS); do \
			test -x $(RELEASE_DIR)/$$b || { echo "$(RELEASE_DIR)/$$b is missing and $(CARGO) is not on PATH: run \`make release\` first" >&2; exit 1; }; \
		done; \
	fi

# Install everything the pipeline needs. The units' /usr/bin/cairn* program paths are
# rewritten to $(BINDIR). Nothing is enabled or started, and no user or directory is
# created: that is the package's postinst (systemd-sysusers, systemd-tmpfiles) and
# `cairn setup` (see the hint printed at the end).
install: release-bins
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 0755 $(addprefix $(RELEASE_DIR)/,$(BINS)) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	@set -e; for u in $(UNITS); do \
		echo "units/$$u -> $(DESTDIR)$(SYSTEMDUNITDIR)/$$u (programs in $(BINDIR))"; \
		sed 's|/usr/bin/cairn|$(BINDIR)/cairn|g' units/$$u >$(DESTDIR)$(SYSTEMDUNITDIR)/.$$u.tmp; \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/.$$u.tmp; \
		mv -f $(DESTDIR)$(SYSTEMDUNITDIR)/.$$u.tmp $(DESTDIR)$(SYSTEMDUNITDIR)/$$u; \
	done
	@set -e; for m in $(MANPAGES); do \
		d=$(DESTDIR)$(MANDIR)/man$${m##*.}; f=$$d/$${m##*/}; \
		echo "$$m -> $$f$(if $(filter yes,$(MANGZ)),.gz)"; \
		$(INSTALL) -d $$d; rm -f $$f $$f.gz; \
		$(INSTALL) -m 0644 $$m $$f; \
		if [ "$(MANGZ)" = yes ]; then gzip -9n $$f; fi; \
	done
	$(INSTALL) -d $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DBUSPOLICYDIR) \
		$(DESTDIR)$(PKGDATADIR)/sudoers.d
	$(INSTALL) -m 0644 sysusers.d/cairn.conf $(DESTDIR)$(SYSUSERSDIR)/cairn.conf
	$(INSTALL) -m 0644 tmpfiles.d/cairn.conf $(DESTDIR)$(TMPFILESDIR)/cairn.conf
	$(INSTALL) -m 0644 dbus/org.cairn.Pipeline1.conf $(DESTDIR)$(DBUSPOLICYDIR)/org.cairn.Pipeline1.conf
	$(INSTALL) -m 0644 sudoers.d/cairn.in $(DESTDIR)$(PKGDATADIR)/sudoers.d/cairn.in
ifneq ($(CATALOG),)
	$(INSTALL) -d $(DESTDIR)$(CATALOGDIR)
	$(INSTALL) -m 0644 $(CATALOG) $(DESTDIR)$(CATALOGDIR)/cairn.catalog
endif
ifneq ($(COMPLETIONS_SCRIPT),)
	@set -e; out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	bash $(COMPLETIONS_SCRIPT) "$$out" $(RELEASE_DIR); \
	$(INSTALL) -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR); \
	for b in $(BINS); do \
		if [ -f "$$out/bash/$$b" ]; then $(INSTALL) -m 0644 "$$out/bash/$$b" $(DESTDIR)$(BASHCOMPDIR)/$$b; echo "bash completion -> $(DESTDIR)$(BASHCOMPDIR)/$$b"; fi; \
		if [ -f "$$out/zsh/_$$b" ]; then $(INSTALL) -m 0644 "$$out/zsh/_$$b" $(DESTDIR)$(ZSHCOMPDIR)/_$$b; echo "zsh completion -> $(DESTDIR)$(ZSHCOMPDIR)/_$$b"; fi; \
	done
endif
	@if [ -z "$(DESTDIR)" ]; then \
		echo; \
		echo "Installed. As root: systemd-sysusers cairn.conf; systemd-tmpfiles --create cairn.conf;"; \
		echo "journalctl --update-catalog; systemctl daemon-reload; then write /etc/cairn/cairn.conf"; \
		echo "and run cairn setup (it enables the timers)."; \
	fi

# Remove exactly what `install` put there (with the same variables), and the directories
# only cairn uses; shared directories (bin, man8, the unit directory…) stay.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(BINS))
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(UNITS))
	@set -e; for m in $(MANPAGES); do \
		f=$(DESTDIR)$(MANDIR)/man$${m##*.}/$${m##*/}; echo "rm -f $$f $$f.gz"; rm -f $$f $$f.gz; \
	done
	rm -f $(DESTDIR)$(SYSUSERSDIR)/cairn.conf $(DESTDIR)$(TMPFILESDIR)/cairn.conf \
		$(DESTDIR)$(DBUSPOLICYDIR)/org.cairn.Pipeline1.conf $(DESTDIR)$(CATALOGDIR)/cairn.catalog \
		$(DESTDIR)$(PKGDATADIR)/sudoers.d/cairn.in
	rm -f $(addprefix $(DESTDIR)$(BASHCOMPDIR)/,$(BINS)) $(addprefix $(DESTDIR)$(ZSHCOMPDIR)/_,$(BINS))
	rmdir --ignore-fail-on-non-empty $(DESTDIR)$(PKGDATADIR)/sudoers.d 2>/dev/null || true
	rmdir --ignore-fail-on-non-empty $(DESTDIR)$(PKGDATADIR) 2>/dev/null || true

# The Debian package, target/debian/cairn_VERSION_ARCH.deb: `make install PREFIX=/usr` into
# a staging root, the binaries stripped of their debug sections (symbols stay, so panics
# still name functions), maintainer scripts from packaging/debian/. Rebuilt only when one
# of its inputs changed (cargo leaves the binaries alone when nothing changed).
deb: release-bins
	@$(MAKE) --no-print-directory $(DEB)

$(DEB): $(DEB_INPUTS)
	@test -n "$(DEB_VERSION)" || { echo "no version in Cargo.toml [workspace.package]" >&2; exit 1; }
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr \
		BINDIR=/usr/bin DATADIR=/usr/share MANDIR=/usr/share/man \
		SYSTEMDUNITDIR=/usr/lib/systemd/system SYSUSERSDIR=/usr/lib/sysusers.d \
		TMPFILESDIR=/usr/lib/tmpfiles.d CATALOGDIR=/usr/lib/systemd/catalog \
		DBUSPOLICYDIR=/usr/share/dbus-1/system.d PKGDATADIR=/usr/share/cairn \
		BASHCOMPDIR=/usr/share/bash-completion/completions \
		ZSHCOMPDIR=/usr/share/zsh/vendor-completions MANGZ=yes
	strip --strip-debug $(addprefix $(DEB_ROOT)/usr/bin/,$(BINS))
	$(INSTALL) -d $(DEB_ROOT)/usr/share/doc/cairn $(DEB_ROOT)/DEBIAN
	$(INSTALL) -m 0644 packaging/debian/copyright $(DEB_ROOT)/usr/share/doc/cairn/copyright
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' \
		-e 's|@MAINTAINER@|$(DEB_MAINTAINER)|' \
		-e "s|@INSTALLED_SIZE@|$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)|" \
		packaging/debian/control.in >$(DEB_ROOT)/DEBIAN/control
	@set -e; for s in postinst prerm postrm; do \
		sed -e 's|@TIMERS@|$(filter %.timer,$(UNITS))|' \
			-e 's|@SERVICES@|$(filter-out %@.service,$(filter %.service,$(UNITS)))|' \
			-e 's|@TEMPLATES@|$(filter %@.service,$(UNITS))|' \
			packaging/debian/$$s >$(DEB_ROOT)/DEBIAN/$$s; \
		chmod 0755 $(DEB_ROOT)/DEBIAN/$$s; \
	done
	cd $(DEB_ROOT) && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums
	dpkg-deb --root-owner-group -Z$(DEB_COMPRESS) --build $(DEB_ROOT) $(DEB).tmp
	mv -f $(DEB).tmp $(DEB)
	rm -rf $(DEB_ROOT)
	@echo "built $(DEB)"
