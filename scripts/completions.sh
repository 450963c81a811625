#!/usr/bin/env bash
# Write the shell completion scripts of cairn's seven binaries:
#
#   scripts/completions.sh OUTDIR BINDIR
#
# writes OUTDIR/bash/NAME and OUTDIR/zsh/_NAME for each binary NAME found in BINDIR (for
# `make install`: OUTDIR/bash goes to /usr/share/bash-completion/completions, OUTDIR/zsh
# to /usr/share/zsh/vendor-completions). Each binary prints its own script when run with
# CAIRN_COMPLETIONS=bash or zsh (see cairn(7)), generated from its command-line
# definition, so the scripts always match the binaries they come with. A binary missing
# from BINDIR, or one that fails, is an error: nothing half-written is left behind.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 OUTDIR BINDIR" >&2
    exit 1
fi
out=$1
bindir=$2
bins=(cairn cairn-preflight cairn-quiesce cairn-snapshot cairn-upload cairn-drill cairn-heartbeat)

for b in "${bins[@]}"; do
    if [ ! -x "$bindir/$b" ]; then
        echo "$0: $bindir/$b is missing or not executable (build first: cargo build --release)" >&2
        exit 1
    fi
done

mkdir -p "$out/bash" "$out/zsh"
for b in "${bins[@]}"; do
    for shell in bash zsh; do
        if [ "$shell" = bash ]; then dest=$out/bash/$b; else dest=$out/zsh/_$b; fi
        if ! CAIRN_COMPLETIONS=$shell "$bindir/$b" >"$dest.tmp"; then
            rm -f "$dest.tmp"
            echo "$0: $bindir/$b could not print its $shell completion script" >&2
            exit 1
        fi
        if [ ! -s "$dest.tmp" ]; then
            rm -f "$dest.tmp"
            echo "$0: $bindir/$b printed an empty $shell completion script" >&2
            exit 1
        fi
        chmod 0644 "$dest.tmp"
        mv -f "$dest.tmp" "$dest"
    done
done
