"""Git's pack (with its ``.idx``) and index files written straight from Python, for the
tarball import.

``git fast-import`` spends most of an 80k-file import in git's collision-detecting SHA-1
(each object, then the whole pack again), and ``git checkout`` then reads everything back;
Python's hashlib (the CPU's SHA instructions) hashes about four times faster, and the files
are written in the same pass. So the objects of a tarball are hashed and stored here (pack
format v2, zlib-stored at level 0: no deflate cost, never deltified; pack index v2), and
git's index (v2) is written from the stat data of the files. Git reads the result like any
repository's: ``git fsck --strict`` checks it in the tests, and the revision is compared with
what ``git add`` + ``git commit`` give for the same tree.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

BLOB, TREE, COMMIT = 3, 2, 1
_TYPE_NAME = {BLOB: b"blob", TREE: b"tree", COMMIT: b"commit"}
CHUNK = 1 << 20  # bytes read or hashed at a time (a member is never held whole)


class PackWriter:
    """Objects appended to a pack under *git_dir*; ``finish`` makes it part of the repository
    (until then nothing git reads has changed). A repeated object is stored once."""

    def __init__(self, git_dir: Path) -> None:
        self.dir = git_dir / "objects" / "pack"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.dir / f"tmp_pack_xenpipe_{os.getpid()}"
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self.f.write(b"\0" * 12)  # the header, once the count is known
        self.entries: dict[bytes, tuple[int, int]] = {}  # sha -> (crc32, offset)

    def add(self, kind: int, size: int, chunks: Iterable[bytes]) -> bytes:
        """Store an object of *size* bytes given as *chunks*; its binary SHA-1."""
        offset = self.f.tell()
        head = bytearray([(kind << 4) | (size & 15) | (0x80 if size > 15 else 0)])
        rest = size >> 4
        while rest:
            head.append((rest & 0x7F) | (0x80 if rest > 0x7F else 0))
            rest >>= 7
        sha = hashlib.sha1(b"%s %d\0" % (_TYPE_NAME[kind], size))
        comp = zlib.compressobj(0)
        crc = zlib.crc32(head)
        self.f.write(head)
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            sha.update(chunk)
            out = comp.compress(chunk)
            crc = zlib.crc32(out, crc)
            self.f.write(out)
        out = comp.flush()
        crc = zlib.crc32(out, crc)
        self.f.write(out)
        if seen != size:
            raise ValueError(f"object of {size} bytes got {seen}")
        digest = sha.digest()
        if digest in self.entries:  # stored already: take this copy back
            self.f.seek(offset)
            self.f.truncate()
        else:
            self.entries[digest] = (crc, offset)
        return digest

    def add_bytes(self, kind: int, data: bytes) -> bytes:
        return self.add(kind, len(data), (data,))

    def finish(self) -> str:
        """Write the header, the trailing checksum and the index; the pack's name."""
        self.f.seek(0)
        self.f.write(b"PACK" + struct.pack(">II", 2, len(self.entries)))
        self.f.close()
        sha = hashlib.sha1()
        with open(self.tmp, "rb") as f:
            while block := f.read(CHUNK):
                sha.update(block)
        pack_sha = sha.digest()
        with open(self.tmp, "ab") as f:
            f.write(pack_sha)
        name = f"pack-{pack_sha.hex()}"
        idx_tmp = self.dir / f"tmp_idx_xenpipe_{os.getpid()}"
        idx_tmp.write_bytes(self._index(pack_sha))
        self.tmp.rename(self.dir / f"{name}.pack")  # the .idx last: it makes the pack seen
        idx_tmp.rename(self.dir / f"{name}.idx")
        return name

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)

    def _index(self, pack_sha: bytes) -> bytes:
        """The pack index, version 2."""
        shas = sorted(self.entries)
        fanout = [0] * 256
        for s in shas:
            fanout[s[0]] += 1
        total = 0
        for i in range(256):
            total += fanout[i]
            fanout[i] = total
        small: list[int] = []
        large: list[int] = []
        for s in shas:
            off = self.entries[s][1]
            if off < 0x80000000:
                small.append(off)
            else:
                small.append(0x80000000 | len(large))
                large.append(off)
        n = len(shas)
        body = b"".join([b"\377tOc", struct.pack(">I", 2), struct.pack(">256I", *fanout),
                         *shas, struct.pack(f">{n}I", *(self.entries[s][0] for s in shas)),
                         struct.pack(f">{n}I", *small), struct.pack(f">{len(large)}Q", *large),
                         pack_sha])
        return body + hashlib.sha1(body).digest()


def write_tree(pack: PackWriter, files: dict[str, tuple[bytes, bytes]]) -> bytes:
    """The tree objects of *files* (path -> (git mode, binary blob SHA-1)), nested as the
    paths say, stored in *pack*; the root tree's SHA-1. Entries are in git's order (a
    directory sorts as if its name ended in ``/``)."""
    root: dict[bytes, object] = {}
    for path, entry in files.items():
        *dirs, leaf = path.encode("utf-8", "surrogateescape").split(b"/")
        node = root
        for d in dirs:
            node = node.setdefault(d, {})  # type: ignore[assignment]
            if not isinstance(node, dict):
                raise ValueError(f"{path}: a file where a directory is needed")
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"{path}: a directory where a file is needed")
        node[leaf] = entry
    return _tree(pack, root)


def _tree(pack: PackWriter, node: dict[bytes, object]) -> bytes:
    rows = []
    for name, child in node.items():
        if isinstance(child, dict):
            rows.append((name + b"/", b"40000 %s\0%s" % (name, _tree(pack, child))))
        else:
            mode, sha = child  # type: ignore[misc]
            rows.append((name, b"%s %s\0%s" % (mode, name, sha)))
    return pack.add_bytes(TREE, b"".join(row for _, row in sorted(rows)))


def write_index(git_dir: Path, tree: Path, files: dict[str, tuple[bytes, bytes]]) -> None:
    """Git's index (version 2) for the work tree *tree*, whose *files* (path -> (git mode,
    binary blob SHA-1)) were just written: each entry with the file's stat data, so that
    ``git status`` compares stat data alone and hashes nothing (git re-reads, by content,
    any entry not older than the index itself: the racy-git rule). Written atomically."""
    rows = []
    root = str(tree)
    for path, (mode, sha) in files.items():
        name = path.encode("utf-8", "surrogateescape")
        st = os.lstat(os.path.join(root, path))
        fields = (st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9,
                  st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9, st.st_dev, st.st_ino,
                  int(mode, 8), st.st_uid, st.st_gid, st.st_size)
        entry = struct.pack(">10I20sH", *(f & 0xFFFFFFFF for f in fields), sha,
                            min(len(name), 0xFFF)) + name
        rows.append((name, entry + b"\0" * (8 - len(entry) % 8)))
    rows.sort()
    body = b"".join([b"DIRC", struct.pack(">II", 2, len(rows)), *(e for _, e in rows)])
    tmp = git_dir / "index.xenpipe.tmp"
    tmp.write_bytes(body + hashlib.sha1(body).digest())
    tmp.replace(git_dir / "index")
