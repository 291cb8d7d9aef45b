"""An in-memory FUSE filesystem that keeps, on a power cut, only what fsync made durable.

The strict POSIX model of Pillai et al. ("All File Systems Are Not Created Equal", OSDI 2014):
a file's bytes become durable when the file is fsynced (fsync or fdatasync), a folder's names
(which inode each names) when the folder itself is fsynced (fsyncdir). A rename, a create, an
unlink or a mkdir is therefore durable only once the folder(s) it changed are fsynced; fsyncing
a file says nothing about its name.

    python tests/edge/powercut_fs.py IMAGE MOUNTPOINT

mounts the state saved in IMAGE (empty when IMAGE does not exist) and serves it from memory.
Unmounting it (`fusermount -u MOUNTPOINT`) is the power cut: every folder's names become its
durable names, every file's bytes its durable bytes (empty when never synced), what is no
longer reachable is dropped, and that state is written to IMAGE for the next mount (the
reboot). Kill the writers before unmounting so that the cut falls where they were stopped.
"""

from __future__ import annotations

import errno
import itertools
import os
import pickle
import stat
import sys
import time
from typing import Any

import mfusepy as fuse


class Node:
    """An inode: a file's bytes (current and durable) or a folder's names (current and durable)."""

    def __init__(self, mode: int) -> None:
        self.mode = mode
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now
        self.data = bytearray()
        self.durable = b""
        self.entries: dict[str, Node] = {}
        self.durable_entries: dict[str, Node] = {}
        self.nlink = 1  # names that lead to it (files; a folder reports 2)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def touch(self) -> None:
        self.mtime = self.ctime = time.time_ns()


def power_cut(root: Node) -> None:
    """What a power cut leaves: durable names and bytes only, from the root down."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            node.nlink += 1  # one more durable name for a hard-linked file
            continue
        seen.add(id(node))
        if node.is_dir:
            node.entries = dict(node.durable_entries)
            stack.extend(node.entries.values())
        else:
            node.data = bytearray(node.durable)
            node.nlink = 1


class PowerCutFS(fuse.Operations):
    """The FUSE side; handles map to nodes, so a file renamed or unlinked while open works."""

    use_ns = True
    flag_nullpath_ok = True  # ops on open, unlinked files come with the handle only

    def __init__(self, root: Node) -> None:
        self.root = root
        self.handles: dict[int, Node] = {}
        self._next = itertools.count(1)

    # -- lookup ---------------------------------------------------------------------------

    def _split(self, path: str) -> tuple[Node, str]:
        parent, _, name = path.rstrip("/").rpartition("/")
        node = self._node(parent or "/")
        if not node.is_dir:
            raise fuse.FuseOSError(errno.ENOTDIR)
        return node, name

    def _node(self, path: str, fh: int | None = None) -> Node:
        if fh is not None and fh in self.handles:
            return self.handles[fh]
        if path is None:
            raise fuse.FuseOSError(errno.EBADF)
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise fuse.FuseOSError(errno.ENOTDIR)
            try:
                node = node.entries[part]
            except KeyError:
                raise fuse.FuseOSError(errno.ENOENT) from None
        return node

    def _handle(self, node: Node) -> int:
        fh = next(self._next)
        self.handles[fh] = node
        return fh

    # -- metadata -------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        n = self._node(path, fh)
        size = 4096 if n.is_dir else len(n.data)
        return dict(
            st_mode=n.mode,
            st_nlink=2 if n.is_dir else n.nlink,
            st_size=size,
            st_uid=os.getuid(),
            st_gid=os.getgid(),
            st_blocks=(size + 511) // 512,
            st_atime=n.atime,
            st_mtime=n.mtime,
            st_ctime=n.ctime,
        )

    def chmod(self, path: str, mode: int) -> int:
        n = self._node(path)
        n.mode = (n.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        n = self._node(path)
        n.atime, n.mtime = times if times else (time.time_ns(),) * 2
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return dict(
            f_bsize=4096,
            f_frsize=4096,
            f_blocks=1 << 20,
            f_bfree=1 << 19,
            f_bavail=1 << 19,
            f_files=1 << 16,
            f_ffree=1 << 15,
            f_namemax=255,
        )

    def access(self, path: str, amode: int) -> int:
        self._node(path)
        return 0

    # -- folders --------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> int:
        parent, name = self._split(path)
        if name in parent.entries:
            raise fuse.FuseOSError(errno.EEXIST)
        parent.entries[name] = Node(stat.S_IFDIR | (mode & 0o7777))
        parent.touch()
        return 0

    def rmdir(self, path: str) -> int:
        parent, name = self._split(path)
        node = self._node(path)
        if not node.is_dir:
            raise fuse.FuseOSError(errno.ENOTDIR)
        if node.entries:
            raise fuse.FuseOSError(errno.ENOTEMPTY)
        del parent.entries[name]
        parent.touch()
        return 0

    def opendir(self, path: str) -> int:
        return self._handle(self._node(path))

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self._node(path, fh).entries]

    def releasedir(self, path: str, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        """The folder's names become durable (not the bytes of the files they name)."""
        node = self._node(path, fh)
        node.durable_entries = dict(node.entries)
        return 0

    # -- names ----------------------------------------------------------------------------

    def unlink(self, path: str) -> int:
        parent, name = self._split(path)
        if name not in parent.entries:
            raise fuse.FuseOSError(errno.ENOENT)
        if parent.entries[name].is_dir:
            raise fuse.FuseOSError(errno.EISDIR)
        parent.entries.pop(name).nlink -= 1
        parent.touch()
        return 0

    def link(self, target: str, source: str) -> int:
        """A second name for a file (`ln source target`): durable once its folder is fsynced."""
        node = self._node(source)
        if node.is_dir:
            raise fuse.FuseOSError(errno.EPERM)
        parent, name = self._split(target)
        if name in parent.entries:
            raise fuse.FuseOSError(errno.EEXIST)
        parent.entries[name] = node
        node.nlink += 1
        node.ctime = time.time_ns()
        parent.touch()
        return 0

    def rename(self, old: str, new: str) -> int:
        """Moves a name between folders: durable once both folders are fsynced."""
        src_dir, src_name = self._split(old)
        dst_dir, dst_name = self._split(new)
        node = src_dir.entries.get(src_name)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        target = dst_dir.entries.get(dst_name)
        if target is node:
            return 0
        if target is not None:
            if target.is_dir and not node.is_dir:
                raise fuse.FuseOSError(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise fuse.FuseOSError(errno.ENOTDIR)
            if target.is_dir and target.entries:
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            target.nlink -= 1
        del src_dir.entries[src_name]
        dst_dir.entries[dst_name] = node
        src_dir.touch()
        dst_dir.touch()
        node.ctime = time.time_ns()
        return 0

    # -- files ----------------------------------------------------------------------------

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        parent, name = self._split(path)
        node = parent.entries.get(name)
        if node is None:
            node = parent.entries[name] = Node(stat.S_IFREG | (mode & 0o7777))
            parent.touch()
        return self._handle(node)

    def open(self, path: str, flags: int) -> int:
        node = self._node(path)
        if flags & os.O_TRUNC:
            node.data = bytearray()
            node.touch()
        return self._handle(node)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._node(path, fh).data[offset : offset + size])

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        node = self._node(path, fh)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.touch()
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        node = self._node(path, fh)
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.touch()
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        """The file's bytes become durable (not its name: that is its folder's fsync)."""
        node = self._node(path, fh)
        node.durable = bytes(node.data)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0


def main(image: str, mountpoint: str) -> None:
    """Mount IMAGE's state; on unmount, cut the power and save what survived to IMAGE."""
    if os.path.exists(image):
        with open(image, "rb") as f:
            root = pickle.load(f)
    else:
        root = Node(stat.S_IFDIR | 0o755)
        root.durable_entries = {}
    fs = PowerCutFS(root)
    fuse.FUSE(
        fs,
        mountpoint,
        foreground=True,
        nothreads=True,
        hard_remove=True,
        big_writes=True,
        fsname="powercut",
    )
    power_cut(root)
    tmp = image + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(root, f)
    os.replace(tmp, image)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
