#!/usr/bin/env bash
# Install what building (`deps.sh build`) or testing (`deps.sh test`) cairn needs on
# Debian, and only what is missing: when every package is present it installs nothing and
# needs neither root nor the network. `make demo` and `make test` run it first, so both
# work on a fresh machine as root; .ci/run runs `deps.sh test`.
set -euo pipefail
what=${1:-build}

# Building: openssl-sys (libssl-dev, pkg-config), libblkid-rs (libblkid-dev, and
# libclang-dev for its bindgen bindings).
build_pkgs=(libssl-dev pkg-config libblkid-dev libclang-dev)
# Testing, besides: dbus-daemon (D-Bus signal tests), mandoc (man page lint), acl/attr
# (ACL and xattr fixtures), tar (compared with GNU tar), util-linux (setpriv, findmnt),
# libarchive-tools (bsdtar reads our tar export), xfsprogs/e2fsprogs (test disks),
# systemd-container (systemd-nspawn for the booted-systemd tests), sudo (visudo, the
# non-root mount path), systemd/dbus/procps (what the test containers run), passwd
# (useradd for cairn setup), python3-pip (the FORMAT.md reader's packages), PostgreSQL
# (server, pgbench) and MariaDB for the dump and quiesce tests, exim4 for the alert tests,
# zsh (`zsh -n` on the generated zsh completion scripts), binutils (strip for `make deb`,
# objdump for the package test; dpkg-deb is in dpkg).
# (Garage, the S3 server of the upload tests, comes from crates.io: see below.)
test_pkgs=(dbus-daemon mandoc acl attr tar util-linux libarchive-tools python3-pip xfsprogs
    e2fsprogs systemd-container sudo systemd dbus procps passwd postgresql postgresql-contrib
    mariadb-server mariadb-client exim4-daemon-light zsh binutils)

pkgs=("${build_pkgs[@]}")
[ "$what" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$p")
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps.sh: installing ${missing[*]}" >&2
    # exim4 in "local delivery only" mode: its sendmail delivers into /var/mail/USER at
    # once, no daemon and no network needed.
    $SUDO debconf-set-selections <<'DEBCONF'
exim4-config exim4/dc_eximconfig_configtype select local delivery only; not on a network
exim4-config exim4/dc_local_interfaces string 127.0.0.1 ; ::1
exim4-config exim4/dc_other_hostnames string
exim4-config exim4/dc_relay_domains string
exim4-config exim4/dc_relay_nets string
exim4-config exim4/dc_minimaldns boolean false
exim4-config exim4/dc_localdelivery select mbox format in /var/mail/
exim4-config exim4/use_split_config boolean false
exim4-config exim4/dc_postmaster string root
DEBCONF
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # MariaDB's own service stays off: booted test containers are an overlay of this
    # root and would start it. (PostgreSQL's cluster unit stays as Debian enables it;
    # the container tests that do not use it mask it.)
    if printf '%s\n' "${missing[@]}" | grep -qx mariadb-server; then
        $SUDO systemctl disable mariadb.service >/dev/null 2>&1 ||
            $SUDO rm -f /etc/systemd/system/multi-user.target.wants/mariadb.service
    fi
fi

if [ "$what" = test ]; then
    # The independent FORMAT.md reader's crypto, hashing and compression.
    if ! python3 -c 'import cryptography, blake3, zstandard' 2>/dev/null; then
        echo "deps.sh: installing the Python packages cryptography blake3 zstandard" >&2
        python3 -m pip install --quiet --disable-pip-version-check cryptography blake3 zstandard
    fi
    command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
    # Garage, the S3 server the upload tests run against (crates.io has no binary, so it
    # is built: about ten minutes on two cores; only its sqlite metadata backend).
    if ! command -v garage >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
        echo "deps.sh: building Garage 2.5.0, the S3 server of the upload tests" >&2
        cargo install --quiet --locked garage --version 2.5.0 --no-default-features \
            --features bundled-libs,sqlite
    fi
    cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 ||
        rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
