#!/usr/bin/env python3
"""An independent reader of the cairn repository format, written from docs/FORMAT.md.

It shares no code with cairn: it exists to prove that the specification is complete.
Section numbers in comments (§N) refer to docs/FORMAT.md.

Usage:
    reader.py [--passphrase] REPO KEYFILE list
    reader.py [--passphrase] REPO KEYFILE extract SNAPSHOT_ID OUTDIR [--check-chunking]
    reader.py [--passphrase] REPO KEYFILE verify

KEYFILE is a key file (§6.1); with --passphrase it is a file holding a passphrase
(less one trailing newline). SNAPSHOT_ID is a snapshot name, a unique prefix of one, or
"latest". `extract` writes every entry of the snapshot under OUTDIR at its absolute path
(§12.1), verifying every blob and every whole-file hash; --check-chunking also re-chunks
every file (§13) and checks that the chunk ids match the tree. `verify` checks every
object of the repository (§14).

Exit status: 0 success; 1 the repository is damaged or a check failed; 2 usage, I/O or
key error; 3 a required Python module is missing.

Requires the PyPI packages: cryptography, blake3, zstandard.
"""

import calendar
import hashlib
import json
import os
import re
import secrets
import stat
import sys

try:
    import blake3
    import zstandard
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
except ImportError as _e:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"reader.py: missing Python module ({_e}); "
        "install them with: pip install cryptography blake3 zstandard\n"
    )
    sys.exit(3)


# ----------------------------------------------------------------------------------------
# Constants (§4, §5, §7–§10, §15)

FORMAT_NAME = "cairn-repository"
FORMAT_VERSION = 1
CHUNKER_ALGORITHM = "fastcdc-2020-keyed"

LABEL_BLOB_ID = b"cairn/v1/blob-id"
LABEL_BLOB = b"cairn/v1/blob"
LABEL_META = b"cairn/v1/meta"
LABEL_GEAR = b"cairn/v1/gear"
LABEL_KEY_SLOT = b"cairn/v1/key-slot"

AAD_PACK_HEADER = b"cairn/v1/pack-header"
AAD_INDEX = b"cairn/v1/index"
AAD_SNAPSHOT = b"cairn/v1/snapshot"

NONCE_LEN = 12
TAG_LEN = 16
SEAL_OVERHEAD = NONCE_LEN + 1 + TAG_LEN  # 29

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

MAX_KEY_FILE = 1024
MAX_SLOT = 65536
MAX_CONFIG = 64 * KIB
MAX_SNAPSHOT = 64 * MIB
MAX_INDEX = 1 * GIB
MAX_PACK_ENTRIES = 1 << 22
ENTRY_LEN = 49
MAX_PACK_HEADER = 16 + ENTRY_LEN * MAX_PACK_ENTRIES
MAX_TREE = 256 * MIB

MAX_TREE_ENTRIES = 1 << 24
MAX_XATTRS = 4096
MAX_XATTR_VALUE = 1 << 16
MAX_SYMLINK = 4095
MAX_EXTENTS = 1 << 24
MAX_CHUNKS = 1 << 28

BLOB_DATA = 0
BLOB_TREE = 1

T_FILE, T_DIR, T_SYMLINK, T_FIFO, T_CHR, T_BLK = 1, 2, 3, 4, 5, 6

U64 = (1 << 64) - 1

# §13: FastCDC 2020 mask table.
MASKS = [
    0, 0, 0, 0, 0,
    0x0000000001804110,
    0x0000000001803110,
    0x0000000018035100,
    0x0000001800035300,
    0x0000019000353000,
    0x0000590003530000,
    0x0000D90003530000,
    0x0000D90103530000,
    0x0000D90303530000,
    0x0000D90313530000,
    0x0000D90F03530000,
    0x0000D90303537000,
    0x0000D90703537000,
    0x0000D90707537000,
    0x0000D91707537000,
    0x0000D91747537000,
    0x0000D91767537000,
    0x0000D93767537000,
    0x0000D93777537000,
    0x0000D93777577000,
    0x0000DB3777577000,
]

HEX64 = re.compile(r"^[0-9a-f]{64}$")
OBJECT_NAME = re.compile(r"^[0-9A-Za-z-]{1,128}$")


class Damaged(Exception):
    """The repository is damaged, or an object fails a check."""


class Unusable(Exception):
    """Usage, I/O or key problem (not evidence of damage)."""


# ----------------------------------------------------------------------------------------
# Bounded file access (§15: every length is bounded before it is used)


def read_bounded(path, limit, what):
    """Read a whole regular file that must be at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise Unusable(f"cannot open {what} {path!r}: {e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Damaged(f"{what} {path!r} is not a regular file")
        if st.st_size > limit:
            raise Damaged(f"{what} {path!r} is {st.st_size} bytes, over the limit of {limit}")
        chunks = []
        total = 0
        while True:
            b = os.read(fd, min(1 << 20, limit + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > limit:
                raise Damaged(f"{what} {path!r} grew over the limit of {limit}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def pread_exact(fd, length, offset, what):
    out = bytearray()
    while len(out) < length:
        b = os.pread(fd, min(length - len(out), 1 << 20), offset + len(out))
        if not b:
            raise Damaged(f"{what}: short read ({len(out)} of {length} bytes at offset {offset})")
        out += b
    return bytes(out)


def list_objects(directory):
    """Names of complete objects in a directory (§3): valid names, regular files only."""
    try:
        entries = list(os.scandir(directory))
    except OSError as e:
        raise Unusable(f"cannot list {directory!r}: {e}") from e
    names = []
    for e in entries:
        n = os.fsdecode(e.name)
        if OBJECT_NAME.match(n) and e.is_file(follow_symlinks=False):
            names.append(n)
    names.sort()
    return names


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------
# Cryptography (§5)


def hkdf(ikm, salt, info, length):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def zstd_bounded(body, bound):
    """Decompress one or more complete zstd frames into at most `bound` bytes (§5.3)."""
    if not body:
        raise Damaged("zstd body is empty")
    out = bytearray()
    pos = 0
    step = 128  # small input steps keep the overshoot past `bound` small (a few MiB)
    while pos < len(body):
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            while not d.eof:
                if pos >= len(body):
                    raise Damaged("zstd frame is truncated")
                piece = body[pos:pos + step]
                pos += len(piece)
                out += d.decompress(piece)
                if len(out) > bound:
                    raise Damaged(f"decompressed size exceeds the limit of {bound} bytes")
        except zstandard.ZstdError as e:
            raise Damaged(f"zstd: {e}") from e
        pos -= len(d.unused_data)
    return bytes(out)


def open_sealed(key, aad, sealed, bound, what):
    """Open a sealed object (§5.3): authenticate, then bounded decompression."""
    if len(sealed) < SEAL_OVERHEAD:
        raise Damaged(f"{what}: sealed object too short ({len(sealed)} bytes)")
    nonce = sealed[:NONCE_LEN]
    try:
        payload = AESGCM(key).decrypt(nonce, sealed[NONCE_LEN:], aad)
    except InvalidTag:
        raise Damaged(f"{what}: authentication failed") from None
    flag = payload[0]
    body = payload[1:]
    if flag == 0:
        if len(body) > bound:
            raise Damaged(f"{what}: {len(body)} bytes exceed the limit of {bound}")
        return body
    if flag == 1:
        try:
            return zstd_bounded(body, bound)
        except Damaged as e:
            raise Damaged(f"{what}: {e}") from None
    raise Damaged(f"{what}: unknown compression flag {flag}")


# ----------------------------------------------------------------------------------------
# Binary decoding (§2)


class Buf:
    def __init__(self, data, what):
        self.d = data
        self.p = 0
        self.what = what

    def remaining(self):
        return len(self.d) - self.p

    def take(self, n):
        if n > self.remaining():
            raise Damaged(f"{self.what}: truncated at offset {self.p} (needed {n} bytes)")
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return int.from_bytes(self.take(2), "little")

    def u32(self):
        return int.from_bytes(self.take(4), "little")

    def u64(self):
        return int.from_bytes(self.take(8), "little")

    def i64(self):
        return int.from_bytes(self.take(8), "little", signed=True)

    def id(self):
        return self.take(32)

    def bytes16(self, what, limit):
        n = self.u16()
        if n > limit:
            raise Damaged(f"{self.what}: {what} length {n} exceeds {limit}")
        return self.take(n)

    def bytes32(self, what, limit):
        n = self.u32()
        if n > limit:
            raise Damaged(f"{self.what}: {what} length {n} exceeds {limit}")
        return self.take(n)

    def count(self, what, limit, min_item):
        n = self.u32()
        if n > limit:
            raise Damaged(f"{self.what}: {what} count {n} exceeds {limit}")
        if n * min_item > self.remaining():
            raise Damaged(f"{self.what}: {what} count {n} exceeds the bytes that remain")
        return n

    def finish(self):
        if self.remaining():
            raise Damaged(f"{self.what}: {self.remaining()} trailing bytes")


def read_entry(b):
    """A pack entry (§7): kind, id, offset, sealed length, raw length."""
    kind = b.u8()
    if kind not in (BLOB_DATA, BLOB_TREE):
        raise Damaged(f"{b.what}: blob kind {kind}")
    return (kind, b.id(), b.u64(), b.u32(), b.u32())


# ----------------------------------------------------------------------------------------
# Trees (§9)


def valid_name(name):
    return (
        0 < len(name) <= 255
        and name not in (b".", b"..")
        and b"/" not in name
        and b"\0" not in name
    )


class Node:
    __slots__ = (
        "name", "type", "mode", "uid", "gid", "user", "group", "mtime", "mtime_nsec",
        "xattrs", "size", "hash", "link_group", "extents", "chunks", "subtree", "target",
        "major", "minor",
    )


def decode_tree(data, what):
    b = Buf(data, what)
    v = b.u8()
    if v != 1:
        raise Damaged(f"{what}: tree version {v}")
    n = b.count("entries", MAX_TREE_ENTRIES, 32)
    nodes = []
    prev = None
    for _ in range(n):
        x = Node()
        x.name = b.bytes16("name", 255)
        if not valid_name(x.name):
            raise Damaged(f"{what}: invalid entry name {x.name!r}")
        if prev is not None and not prev < x.name:
            raise Damaged(f"{what}: entry names not strictly increasing")
        prev = x.name
        x.type = b.u8()
        x.mode = b.u32()
        if x.mode & ~0o7777:
            raise Damaged(f"{what}: mode {x.mode:o}")
        x.uid = b.u32()
        x.gid = b.u32()
        x.user = b.bytes16("user", 255)
        x.group = b.bytes16("group", 255)
        x.mtime = b.i64()
        x.mtime_nsec = b.u32()
        if x.mtime_nsec >= 1_000_000_000:
            raise Damaged(f"{what}: mtime nanoseconds {x.mtime_nsec}")
        nx = b.count("xattrs", MAX_XATTRS, 6)
        x.xattrs = []
        for _ in range(nx):
            k = b.bytes16("xattr name", 255)
            if not k or b"\0" in k:
                raise Damaged(f"{what}: invalid xattr name")
            x.xattrs.append((k, b.bytes32("xattr value", MAX_XATTR_VALUE)))
        if x.type == T_FILE:
            x.size = b.u64()
            x.hash = b.id()
            x.link_group = b.u64()
            ne = b.count("extents", MAX_EXTENTS, 16)
            x.extents = []
            end = 0
            for _ in range(ne):
                o, ln = b.u64(), b.u64()
                if o < end or o + ln > x.size:
                    raise Damaged(f"{what}: extents of {x.name!r} overlap or exceed the size")
                end = o + ln
                x.extents.append((o, ln))
            nc = b.count("chunks", MAX_CHUNKS, 32)
            x.chunks = [b.id() for _ in range(nc)]
        elif x.type == T_DIR:
            x.subtree = b.id()
        elif x.type == T_SYMLINK:
            x.target = b.bytes16("symlink target", MAX_SYMLINK)
            if not x.target or b"\0" in x.target:
                raise Damaged(f"{what}: invalid symlink target")
        elif x.type == T_FIFO:
            pass
        elif x.type in (T_CHR, T_BLK):
            x.major = b.u32()
            x.minor = b.u32()
        else:
            raise Damaged(f"{what}: entry type {x.type}")
        nodes.append(x)
    b.finish()
    return nodes


# ----------------------------------------------------------------------------------------
# Chunking (§13), used by --check-chunking


class Chunker:
    def __init__(self, cmin, cavg, cmax, gear):
        self.min, self.avg, self.max = cmin, cavg, cmax
        self.gear = gear
        k = cavg.bit_length() - 1  # floor(log2 avg)
        b = k + 1 if cavg * cavg >= 1 << (2 * k + 1) else k
        self.mask_s = MASKS[b + 1]
        self.mask_l = MASKS[b - 1]

    def cut(self, data, n):
        mn = self.min
        if n <= mn:
            return n
        remaining = min(n, self.max)
        center = self.avg if n >= self.avg else n
        r_end = remaining - remaining % 2
        c_end = center - center % 2
        gear = self.gear
        h = 0
        i = mn
        lim = min(c_end, r_end)
        ms = self.mask_s
        while i < lim:
            h = ((h << 1) + gear[data[i]]) & U64
            if not h & ms:
                return i
            i += 1
        ml = self.mask_l
        while i < r_end:
            h = ((h << 1) + gear[data[i]]) & U64
            if not h & ml:
                return i
            i += 1
        return remaining


class ChunkCheck:
    """Re-chunk a data stream and compare the pieces' ids with the recorded chunk list."""

    def __init__(self, repo, expected, what):
        self.repo = repo
        self.expected = expected
        self.what = what
        self.buf = bytearray()
        self.k = 0

    def _emit(self, n):
        piece = bytes(self.buf[:n])
        del self.buf[:n]
        if self.k >= len(self.expected) or self.repo.blob_id(piece) != self.expected[self.k]:
            raise Damaged(f"{self.what}: chunk {self.k} does not match the recomputed chunking")
        self.k += 1

    def feed(self, data):
        self.buf += data
        c = self.repo.chunker
        while len(self.buf) >= c.max:
            self._emit(c.cut(self.buf, len(self.buf)))

    def finish(self):
        c = self.repo.chunker
        while self.buf:
            self._emit(c.cut(self.buf, len(self.buf)))
        if self.k != len(self.expected):
            raise Damaged(f"{self.what}: recomputed {self.k} chunks, the tree lists {len(self.expected)}")


# ----------------------------------------------------------------------------------------
# The repository


def parse_time(s):
    """RFC 3339 -> integer nanoseconds since the epoch (for ordering snapshots)."""
    m = re.match(
        r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$", s
    )
    if not m:
        raise Damaged(f"invalid time {s!r}")
    y, mo, d, h, mi, se = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    ns = int((frac[1:] + "000000000")[:9]) if frac else 0
    t = calendar.timegm((y, mo, d, h, mi, se, 0, 0, 0))
    tz = m.group(8)
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        t -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return t * 1_000_000_000 + ns


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def load_key_material(path, passphrase):
    if passphrase:
        raw = read_bounded(path, MAX_SLOT, "passphrase file")
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if not raw:
            raise Unusable("the passphrase is empty")
        return "passphrase", raw
    raw = read_bounded(path, MAX_KEY_FILE, "key file")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Unusable(f"{path} is not a key file (not UTF-8)") from None
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise Unusable(f"{path} is not a key file (expected 64 hexadecimal digits)")
    return "keyfile", bytes.fromhex(text)


class Repo:
    def __init__(self, root, keyfile, passphrase=False):
        self.root = os.fsencode(root)
        self.warnings = []
        self._load_config()
        kind, material = load_key_material(keyfile, passphrase)
        master = self._unlock(kind, material)
        salt = self.id.encode("ascii")
        self.id_key = hkdf(master, salt, LABEL_BLOB_ID, 32)
        self.blob_key = hkdf(master, salt, LABEL_BLOB, 32)
        self.meta_key = hkdf(master, salt, LABEL_META, 32)
        g = hkdf(master, salt, LABEL_GEAR, 2048)
        self.gear = [int.from_bytes(g[8 * i:8 * i + 8], "little") for i in range(256)]
        self.chunker = Chunker(self.cmin, self.cavg, self.cmax, self.gear)
        self._pack_fds = {}

    def path(self, *parts):
        return os.path.join(self.root, *[os.fsencode(p) for p in parts])

    # §4
    def _load_config(self):
        raw = read_bounded(self.path("config"), MAX_CONFIG, "config")
        try:
            c = json.loads(raw)
        except ValueError as e:
            raise Unusable(f"config is not JSON: {e}") from None
        if not isinstance(c, dict) or set(c) != {"format", "version", "id", "created", "chunker"}:
            raise Unusable("config: unexpected or missing members")
        if c["format"] != FORMAT_NAME or c["version"] != FORMAT_VERSION or not is_int(c["version"]):
            raise Unusable(f"config: format {c['format']!r} version {c['version']!r} is not supported")
        if not isinstance(c["id"], str) or not c["id"].isascii():
            raise Unusable("config: invalid id")
        ch = c["chunker"]
        if not isinstance(ch, dict) or set(ch) != {"algorithm", "min", "avg", "max"}:
            raise Unusable("config: unexpected or missing chunker members")
        if ch["algorithm"] != CHUNKER_ALGORITHM:
            raise Unusable(f"config: unknown chunker {ch['algorithm']!r}")
        mn, av, mx = ch["min"], ch["avg"], ch["max"]
        if not all(is_int(v) for v in (mn, av, mx)) or not (
            64 <= mn <= MIB and 256 <= av <= 4 * MIB and KIB <= mx <= 16 * MIB and mn <= av <= mx
        ):
            raise Unusable("config: chunker sizes out of range")
        self.id = c["id"]
        self.cmin, self.cavg, self.cmax = mn, av, mx

    # §6
    def _unlock(self, kind, material):
        aad = LABEL_KEY_SLOT + self.id.encode("ascii")
        tried = 0
        for name in list_objects(self.path("keys")):
            try:
                raw = read_bounded(self.path("keys", name), MAX_SLOT, "key slot")
                s = json.loads(raw)
            except (Damaged, ValueError):
                continue
            required = {"version", "kind", "created", "host", "label", "salt", "wrapped"}
            if not isinstance(s, dict) or not required <= set(s) <= required | {"scrypt"}:
                continue
            if s["kind"] != kind or s["version"] != 1:
                continue
            try:
                salt = bytes.fromhex(s["salt"])
                wrapped = bytes.fromhex(s["wrapped"])
            except (TypeError, ValueError):
                continue
            if kind == "keyfile":
                wk = hkdf(material, salt, LABEL_KEY_SLOT, 32)
            else:
                p = s.get("scrypt")
                if not isinstance(p, dict) or set(p) != {"log_n", "r", "p"}:
                    continue
                log_n, r, par = p["log_n"], p["r"], p["p"]
                if not all(is_int(v) for v in (log_n, r, par)) or not (
                    1 <= log_n <= 22 and 1 <= r <= 32 and 1 <= par <= 16
                ):
                    self.warnings.append(f"keys/{name}: scrypt parameters out of bounds")
                    continue
                wk = Scrypt(salt=salt, length=32, n=1 << log_n, r=r, p=par).derive(material)
            tried += 1
            try:
                master = open_sealed(wk, aad, wrapped, 32, f"keys/{name}")
            except Damaged:
                continue
            if len(master) != 32:
                raise Damaged(f"keys/{name}: the wrapped key has the wrong length")
            return master
        raise Unusable(f"the {kind} opens none of the {tried} key slots of its kind")

    # §5.2
    def blob_id(self, data):
        return blake3.blake3(data, key=self.id_key).digest()

    # §8
    def read_index_files(self):
        files = {}
        for name in list_objects(self.path("index")):
            if not HEX64.match(name):
                raise Damaged(f"index/{name}: not a valid object name")
            raw = read_bounded(self.path("index", name), MAX_INDEX + SEAL_OVERHEAD, f"index/{name}")
            if sha256_hex(raw) != name:
                raise Damaged(f"index/{name}: content does not match its name")
            plain = open_sealed(self.meta_key, AAD_INDEX, raw, MAX_INDEX, f"index/{name}")
            b = Buf(plain, f"index/{name}")
            v = b.u8()
            if v != 1:
                raise Damaged(f"index/{name}: index version {v}")
            ns = b.count("superseded", 1 << 32, 32)
            supersedes = [b.id() for _ in range(ns)]
            np_ = b.count("packs", 1 << 32, 36)
            packs = []
            for _ in range(np_):
                pid = b.id()
                ne = b.count("pack entries", 1 << 32, ENTRY_LEN)
                packs.append((pid, [read_entry(b) for _ in range(ne)]))
            b.finish()
            files[name] = (supersedes, packs)
        return files

    def load_index(self):
        files = self.read_index_files()
        superseded = {s.hex() for sup, _ in files.values() for s in sup}
        self.index = {}
        self.pack_entries = {}
        for name in sorted(files):
            if name in superseded:
                continue
            for pid, entries in files[name][1]:
                self.pack_entries.setdefault(pid.hex(), entries)
                for kind, bid, off, ln, raw in entries:
                    self.index.setdefault(bid, (pid.hex(), kind, off, ln, raw))

    # §14 step 4
    def read_blob(self, bid, kind):
        loc = self.index.get(bid)
        what = f"blob {bid.hex()}"
        if loc is None:
            raise Damaged(f"{what} is not in the index")
        pack, k, off, ln, raw = loc
        if k != kind:
            raise Damaged(f"{what} has kind {k} in the index, expected {kind}")
        limit = MAX_TREE if kind == BLOB_TREE else self.cmax
        if raw > limit or ln > limit + limit // 8 + 1024:
            raise Damaged(f"{what}: size {raw} exceeds the limit {limit}")
        fd = self._pack_fd(pack)
        sealed = pread_exact(fd, ln, off, f"{what} in pack {pack}")
        plain = open_sealed(self.blob_key, bytes([kind]) + bid, sealed, raw, f"{what} in pack {pack}")
        if self.blob_id(plain) != bid:
            raise Damaged(f"{what}: content does not hash to its id")
        if len(plain) != raw:
            raise Damaged(f"{what}: length differs from the index")
        return plain

    def _pack_fd(self, pack):
        fd = self._pack_fds.get(pack)
        if fd is None:
            if len(self._pack_fds) > 64:
                for f in self._pack_fds.values():
                    os.close(f)
                self._pack_fds.clear()
            p = self.path("data", pack[:2], pack)
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as e:
                raise Damaged(f"pack {pack}: cannot open: {e}") from e
            self._pack_fds[pack] = fd
        return fd

    def load_tree(self, tid):
        return decode_tree(self.read_blob(tid, BLOB_TREE), f"tree {tid.hex()}")

    # §10
    def load_snapshot(self, name):
        what = f"snapshots/{name}"
        if not HEX64.match(name):
            raise Damaged(f"{what}: not a valid object name")
        raw = read_bounded(self.path("snapshots", name), MAX_SNAPSHOT + SEAL_OVERHEAD, what)
        if sha256_hex(raw) != name:
            raise Damaged(f"{what}: content does not match its name")
        plain = open_sealed(self.meta_key, AAD_SNAPSHOT, raw, MAX_SNAPSHOT, what)
        try:
            s = json.loads(plain)
        except ValueError as e:
            raise Damaged(f"{what}: not JSON: {e}") from None
        if not isinstance(s, dict):
            raise Damaged(f"{what}: not a JSON object")
        for k, t in (("version", int), ("time", str), ("host", str), ("paths", list),
                     ("tree", str), ("complete", bool)):
            if not isinstance(s.get(k), t):
                raise Damaged(f"{what}: member {k!r} missing or of the wrong type")
        if s["version"] != 1:
            raise Damaged(f"{what}: snapshot version {s['version']} is not supported")
        if not HEX64.match(s["tree"].lower()):
            raise Damaged(f"{what}: invalid root tree id")
        s["_ns"] = parse_time(s["time"])
        return s

    def snapshots(self):
        out = [(n, self.load_snapshot(n)) for n in list_objects(self.path("snapshots"))]
        out.sort(key=lambda x: (x[1]["_ns"], x[0]))
        return out

    def resolve(self, spec):
        if spec == "latest":
            all_ = self.snapshots()
            if not all_:
                raise Unusable("the repository holds no snapshots")
            return all_[-1]
        m = [n for n in list_objects(self.path("snapshots")) if n.startswith(spec)]
        if len(m) != 1:
            raise Unusable(f"{len(m)} snapshots match {spec!r}")
        return m[0], self.load_snapshot(m[0])


# ----------------------------------------------------------------------------------------
# File content (§12.3)


def hash_zeros(h, frm, to):
    zeros = bytes(min(to - frm, 1 << 20)) if to > frm else b""
    while frm < to:
        n = min(to - frm, len(zeros))
        h.update(zeros[:n])
        frm += n
    return frm


def reconstruct(repo, node, sink, chunk_check=None):
    """Read a file's chunks and place them (§12.3); sink(offset, bytes) receives the data.

    Verifies every blob (in read_blob), the placement rules, the size and the hash."""
    regions = node.extents if node.extents else [(0, None)]
    ri = 0
    in_r = 0
    h = blake3.blake3()
    logical = 0
    for cid in node.chunks:
        data = repo.read_blob(cid, BLOB_DATA)
        if chunk_check is not None:
            chunk_check.feed(data)
        pos = 0
        while pos < len(data):
            if ri >= len(regions):
                raise Damaged("content is longer than its extents")
            off, ln = regions[ri]
            if ln is not None and in_r == ln:
                ri += 1
                in_r = 0
                continue
            n = len(data) - pos if ln is None else min(len(data) - pos, ln - in_r)
            at = off + in_r
            if at + n > node.size:
                raise Damaged("content is longer than the recorded size")
            logical = hash_zeros(h, logical, at)
            piece = data[pos:pos + n]
            sink(at, piece)
            h.update(piece)
            logical = at + n
            in_r += n
            pos += n
    if chunk_check is not None:
        chunk_check.finish()
    hash_zeros(h, logical, node.size)
    if h.digest() != node.hash:
        raise Damaged("content does not match the recorded whole-file hash")


# ----------------------------------------------------------------------------------------
# Commands


def show(path):
    return path.decode("utf-8", "backslashreplace")


def cmd_list(repo):
    out = []
    for name, s in repo.snapshots():
        out.append({
            "id": name,
            "time": s["time"],
            "host": s["host"],
            "paths": s["paths"],
            "tags": s.get("tags", []),
            "tree": s["tree"],
            "complete": s["complete"],
        })
    print(json.dumps(out, indent=2))
    return 0


class Extractor:
    def __init__(self, repo, outdir, check_chunking):
        self.repo = repo
        self.out = os.fsencode(os.path.abspath(outdir))
        self.check_chunking = check_chunking
        self.links = {}  # link_group -> (absolute path of the first member, node)
        self.failures = 0
        self.files = 0
        self.bytes = 0

    def fail(self, path, msg):
        self.failures += 1
        sys.stderr.write(f"reader.py: {show(path)}: {msg}\n")

    def run(self, root_id):
        os.makedirs(self.out, exist_ok=True)
        top = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            nodes = self.repo.load_tree(root_id)
        except Damaged as e:
            os.close(top)
            self.fail(b"/", f"root tree unreadable: {e}")
            return
        # Iterative depth-first walk: (dir fd, entries, index, node of the dir, path).
        stack = [[top, nodes, 0, None, b"/"]]
        while stack:
            frame = stack[-1]
            fd, entries, i, dnode, path = frame
            if i == len(entries):
                stack.pop()
                if dnode is not None:
                    self.dir_meta(fd, dnode, path)
                os.close(fd)
                continue
            frame[2] += 1
            n = entries[i]
            p = path.rstrip(b"/") + b"/" + n.name
            try:
                if n.type == T_DIR:
                    sub = self.repo.load_tree(n.subtree)
                    try:
                        os.mkdir(n.name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                    sfd = os.open(
                        n.name,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=fd,
                    )
                    stack.append([sfd, sub, 0, n, p])
                elif n.type == T_FILE:
                    self.file(fd, n, p)
                elif n.type == T_SYMLINK:
                    os.symlink(n.target, n.name, dir_fd=fd)
                    os.utime(n.name, ns=self.ns(n), dir_fd=fd, follow_symlinks=False)
                elif n.type == T_FIFO:
                    os.mkfifo(n.name, 0o600, dir_fd=fd)
                    os.chmod(n.name, n.mode, dir_fd=fd)
                    os.utime(n.name, ns=self.ns(n), dir_fd=fd)
                else:
                    kind = stat.S_IFCHR if n.type == T_CHR else stat.S_IFBLK
                    try:
                        os.mknod(n.name, kind | 0o600, os.makedev(n.major, n.minor), dir_fd=fd)
                        os.chmod(n.name, n.mode, dir_fd=fd)
                    except PermissionError:
                        sys.stderr.write(f"reader.py: {show(p)}: device not created (needs root)\n")
            except Damaged as e:
                self.fail(p, str(e))
            except OSError as e:
                self.fail(p, f"cannot create: {e}")

    @staticmethod
    def ns(n):
        t = n.mtime * 1_000_000_000 + n.mtime_nsec
        return (t, t)

    def dir_meta(self, fd, n, path):
        try:
            os.chmod(fd, n.mode)
            os.utime(fd, ns=self.ns(n))
        except OSError as e:
            self.fail(path, f"cannot set metadata: {e}")

    def file(self, dfd, n, path):
        self.files += 1
        if n.link_group:
            first = self.links.get(n.link_group)
            if first is not None and same_content(first[1], n):
                os.link(first[0], n.name, dst_dir_fd=dfd, follow_symlinks=False)
                return
        tmp = b".reader-tmp-" + secrets.token_hex(8).encode()
        ofd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dfd,
        )
        ok = False
        try:
            def sink(at, data):
                view = memoryview(data)
                while view:
                    w = os.pwrite(ofd, view, at)
                    view = view[w:]
                    at += w

            cc = ChunkCheck(self.repo, n.chunks, "chunking") if self.check_chunking else None
            reconstruct(self.repo, n, sink, cc)
            os.ftruncate(ofd, n.size)
            os.chmod(ofd, n.mode)
            os.utime(ofd, ns=self.ns(n))
            # Move into place without replacing anything: link, then drop the temp name.
            os.link(tmp, n.name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            ok = True
            self.bytes += n.size
        finally:
            os.close(ofd)
            os.unlink(tmp, dir_fd=dfd)
        if ok and n.link_group and n.link_group not in self.links:
            self.links[n.link_group] = (self.out + path, n)


def same_content(a, b):
    return (a.size, a.hash, a.extents, a.chunks) == (b.size, b.hash, b.extents, b.chunks)


def cmd_extract(repo, spec, outdir, check_chunking):
    name, s = repo.resolve(spec)
    repo.load_index()
    x = Extractor(repo, outdir, check_chunking)
    x.run(bytes.fromhex(s["tree"]))
    sys.stderr.write(
        f"reader.py: snapshot {name[:12]}: {x.files} files, {x.bytes} bytes, "
        f"{x.failures} failures\n"
    )
    return 1 if x.failures else 0


def cmd_verify(repo):
    errors = []
    warnings = list(repo.warnings)
    err = errors.append

    # Index files (§8): names, authentication, structure.
    try:
        repo.load_index()
    except Damaged as e:
        err(str(e))
        return report(errors, warnings)

    # Packs (§7): every file under data/, streamed.
    packs_on_disk = set()
    data_dir = repo.path("data")
    for sub in sorted(os.listdir(data_dir)):
        subp = os.path.join(data_dir, sub)
        if sub.startswith(b".") or not os.path.isdir(subp) or os.path.islink(subp):
            continue
        for name in list_objects(subp):
            if not HEX64.match(name) or name[:2] != os.fsdecode(sub):
                err(f"data/{os.fsdecode(sub)}/{name}: not a pack name for this directory")
                continue
            packs_on_disk.add(name)
            verify_pack(repo, name, err)
    for pack, entries in repo.pack_entries.items():
        if pack not in packs_on_disk:
            err(f"pack {pack} is named by the index but missing")
    for pack in sorted(packs_on_disk - set(repo.pack_entries)):
        warnings.append(f"pack {pack} is in no index (harmless)")
    for bid, (pack, *_rest) in repo.index.items():
        if pack not in packs_on_disk:
            err(f"blob {bid.hex()} lies in missing pack {pack}")

    # Snapshots (§10) and every tree they reach (§9).
    seen = set()
    for name in list_objects(repo.path("snapshots")):
        try:
            s = repo.load_snapshot(name)
        except Damaged as e:
            err(str(e))
            continue
        stack = [bytes.fromhex(s["tree"])]
        while stack:
            tid = stack.pop()
            if tid in seen:
                continue
            seen.add(tid)
            try:
                nodes = repo.load_tree(tid)
            except Damaged as e:
                err(f"snapshot {name[:12]}: {e}")
                continue
            for n in nodes:
                if n.type == T_DIR:
                    stack.append(n.subtree)
                elif n.type == T_FILE:
                    for c in n.chunks:
                        loc = repo.index.get(c)
                        if loc is None:
                            err(f"snapshot {name[:12]}: {show(n.name)}: data blob {c.hex()} missing")
                        elif loc[1] != BLOB_DATA:
                            err(f"snapshot {name[:12]}: {show(n.name)}: blob {c.hex()} is not data")

    # Leftover temporaries (§3) are warnings.
    for dirpath, dirnames, filenames in os.walk(repo.root):
        for f in filenames:
            if f.startswith(b".tmp-"):
                warnings.append(f"temporary file {show(os.path.join(dirpath, f))} (harmless)")
    return report(errors, warnings, packs=len(packs_on_disk), blobs=len(repo.index), trees=len(seen))


def verify_pack(repo, name, err):
    what = f"pack {name}"
    p = repo.path("data", name[:2], name)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        err(f"{what}: cannot open: {e}")
        return
    try:
        size = os.fstat(fd).st_size
        h = hashlib.sha256()
        pos = 0
        while pos < size:
            b = os.pread(fd, min(1 << 20, size - pos), pos)
            if not b:
                break
            h.update(b)
            pos += len(b)
        if pos != size or h.hexdigest() != name:
            err(f"{what}: content does not match its name")
        if size < 4:
            err(f"{what}: shorter than its trailer")
            return
        hlen = int.from_bytes(pread_exact(fd, 4, size - 4, what), "little")
        if hlen + 4 > size or hlen > MAX_PACK_HEADER + SEAL_OVERHEAD:
            err(f"{what}: header length {hlen} is impossible for a pack of {size} bytes")
            return
        area = size - 4 - hlen
        try:
            sealed = pread_exact(fd, hlen, area, what)
            plain = open_sealed(repo.meta_key, AAD_PACK_HEADER, sealed, MAX_PACK_HEADER, f"{what} header")
            b = Buf(plain, f"{what} header")
            v = b.u8()
            if v != 1:
                raise Damaged(f"{what}: header version {v}")
            n = b.count("entries", MAX_PACK_ENTRIES, ENTRY_LEN)
            entries = []
            end = 0
            for _ in range(n):
                e = read_entry(b)
                if e[2] < end or e[2] + e[3] > area:
                    raise Damaged(f"{what}: blob entry at offset {e[2]} overlaps or lies outside the blob area")
                end = e[2] + e[3]
                entries.append(e)
            b.finish()
        except Damaged as e:
            err(str(e))
            return
        indexed = repo.pack_entries.get(name)
        if indexed is not None and indexed != entries:
            err(f"{what}: header and index disagree")
        for kind, bid, off, ln, raw in entries:
            bw = f"{what}: blob {bid.hex()}"
            limit = MAX_TREE if kind == BLOB_TREE else repo.cmax
            if raw > limit or ln > limit + limit // 8 + 1024:
                err(f"{bw}: size {raw} exceeds the limit {limit}")
                continue
            try:
                sealed = pread_exact(fd, ln, off, bw)
                plain = open_sealed(repo.blob_key, bytes([kind]) + bid, sealed, raw, bw)
                if repo.blob_id(plain) != bid:
                    raise Damaged(f"{bw}: content does not hash to its id")
                if len(plain) != raw:
                    raise Damaged(f"{bw}: length differs from the header")
            except Damaged as e:
                err(str(e))
    finally:
        os.close(fd)


def report(errors, warnings, **figures):
    for w in warnings:
        sys.stderr.write(f"reader.py: warning: {w}\n")
    for e in errors:
        sys.stderr.write(f"reader.py: error: {e}\n")
    print(json.dumps({"ok": not errors, "errors": len(errors), "warnings": len(warnings), **figures}))
    return 1 if errors else 0


USAGE = __doc__.split("Exit status")[0].strip()


def main(argv):
    args = list(argv)
    passphrase = "--passphrase" in args
    if passphrase:
        args.remove("--passphrase")
    check_chunking = "--check-chunking" in args
    if check_chunking:
        args.remove("--check-chunking")
    if len(args) < 3:
        sys.stderr.write(USAGE + "\n")
        return 2
    repo_path, keyfile, cmd, rest = args[0], args[1], args[2], args[3:]
    want = {"list": 0, "extract": 2, "verify": 0}
    if cmd not in want or len(rest) != want[cmd]:
        sys.stderr.write(USAGE + "\n")
        return 2
    try:
        repo = Repo(repo_path, keyfile, passphrase)
        if cmd == "list":
            return cmd_list(repo)
        if cmd == "extract":
            return cmd_extract(repo, rest[0], rest[1], check_chunking)
        return cmd_verify(repo)
    except Damaged as e:
        sys.stderr.write(f"reader.py: damaged: {e}\n")
        return 1
    except Unusable as e:
        sys.stderr.write(f"reader.py: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
