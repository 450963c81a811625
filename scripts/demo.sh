#!/usr/bin/env bash
# `make demo`: a real backup and restore with the built binaries, in a scratch directory.
# Backs up an embedded sample tree (every kind of entry cairn handles) and, as root, /etc;
# restores the latest snapshot elsewhere; shows that both trees match (content, modes,
# owners, mtimes to the nanosecond, symlinks, hard links, xattrs, sparse holes); prints the
# snapshot list. No external service is used and nothing outside the scratch dir changes.
set -euo pipefail
BIN=${CAIRN_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
HERE=$(cd "$(dirname "$0")" && pwd)
cairn() { "$BIN/cairn" "$@"; }
W=$(mktemp -d "${TMPDIR:-/tmp}/cairn-demo.XXXXXX")
echo "== scratch directory: $W"
export CAIRN_CONFIG=$W/cairn.conf STATE_DIRECTORY=$W/state CACHE_DIRECTORY=$W/cache RUNTIME_DIRECTORY=$W/run CAIRN_NO_DBUS=1

# The embedded sample tree.
S=$W/sample
mkdir -p "$S/docs/deep/er" "$S/bin"
printf 'hello, cairn\n' > "$S/docs/hello.txt"
head -c 3000000 /dev/urandom > "$S/docs/random.bin"
: > "$S/docs/empty"
ln -s hello.txt "$S/docs/link-to-hello"
ln -s /nonexistent/target "$S/docs/dangling"
ln "$S/docs/hello.txt" "$S/docs/deep/hardlink-to-hello"
printf '#!/bin/sh\necho hi\n' > "$S/bin/tool" && chmod 4755 "$S/bin/tool"
chmod 1777 "$S/docs/deep"
truncate -s 64M "$S/sparse.img" && printf 'data in the middle' | dd of="$S/sparse.img" bs=1 seek=33554432 conv=notrunc status=none
mkfifo "$S/fifo"
touch "$S/$(printf 'caf\xe9-latin1-name')"
setfattr -n user.demo -v "some value" "$S/docs/hello.txt" 2>/dev/null || true
touch -d '2001-02-03 04:05:06.123456789' "$S/docs/hello.txt"

SOURCES="$S"
if [ "$(id -u)" -eq 0 ]; then SOURCES="$S /etc"; fi

cat > "$W/cairn.conf" <<CONF
[repository]
path = $W/repo
key_file = $W/repo.key
[sources]
paths = $SOURCES
CONF
echo "== config ($W/cairn.conf):"; sed 's/^/   /' "$W/cairn.conf"

echo "== cairn key generate, cairn init"
cairn key generate "$W/repo.key"
cairn init
echo "== cairn-snapshot (first run)"
"$BIN/cairn-snapshot"
echo "== a change, then cairn-snapshot again (deduplicated: only the change is added)"
printf 'a new line\n' >> "$S/docs/hello.txt"
"$BIN/cairn-snapshot"
echo "== cairn snapshots"
cairn snapshots
echo "== cairn diff (first -> latest)"
FIRST=$(cairn snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
cairn diff "$FIRST" latest
echo "== cairn check --read-data"
cairn check --read-data
echo "== cairn restore latest --target $W/restore"
cairn restore latest --target "$W/restore"
echo "== comparing the restored tree with the original"
for p in $SOURCES; do
    python3 "$HERE/compare-trees.py" "$p" "$W/restore$p"
done
echo "== cairn restore latest --tar - | tar -t (first lines)"
cairn restore latest --tar - --include "$S/docs/**" | tar -tvf - | awk 'NR <= 5'
echo
echo "Demo finished: backup and restore match. Everything is in $W (remove it when done)."
