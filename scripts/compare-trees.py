#!/usr/bin/env python3
"""Compare two trees the way a restore must reproduce them: type, content, mode (all 12
bits), owner, mtime to the nanosecond, symlink target, device numbers, xattrs, hard-link
groups and sparse holes. Exit 1 and list the differences if any. Used by `make demo`."""
import os, stat, sys

def walk(root):
    out = {}
    for dirpath, dirs, files in os.walk(root.encode()):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root.encode())] = p
    return out

def info(p):
    st = os.lstat(p)
    d = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if not stat.S_ISDIR(st.st_mode):
        d["mtime_ns"] = st.st_mtime_ns
    try:
        d["xattrs"] = sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p, follow_symlinks=False))
    except OSError:
        d["xattrs"] = None
    if stat.S_ISLNK(st.st_mode):
        d["target"] = os.readlink(p)
    elif stat.S_ISREG(st.st_mode):
        d["size"] = st.st_size
        with open(p, "rb") as f:
            d["content"] = f.read()
        d["sparse"] = st.st_blocks * 512 < st.st_size
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        d["rdev"] = st.st_rdev
    return d, (st.st_ino if st.st_nlink > 1 and stat.S_ISREG(st.st_mode) else None)

def main(a, b):
    ta, tb = walk(a), walk(b)
    diffs = [f"only in {a}: {k!r}" for k in ta.keys() - tb.keys()] + [f"only in {b}: {k!r}" for k in tb.keys() - ta.keys()]
    links_a, links_b = {}, {}
    for k in sorted(ta.keys() & tb.keys()):
        (ia, la), (ib, lb) = info(ta[k]), info(tb[k])
        for field in ia:
            if ia[field] != ib.get(field):
                diffs.append(f"{k.decode(errors='backslashreplace')}: {field} differs")
        if la is not None:
            links_a.setdefault(la, set()).add(k)
        if lb is not None:
            links_b.setdefault(lb, set()).add(k)
    if sorted(map(sorted, links_a.values())) != sorted(map(sorted, links_b.values())):
        diffs.append("hard-link groups differ")
    for d in diffs:
        print("DIFFERENT:", d)
    n = len(ta)
    print(f"{a}: {n} entries compared, {'no differences' if not diffs else str(len(diffs)) + ' differences'}")
    return 1 if diffs else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
