"""Find new frames under the inbox: a full scan, and a watcher that keeps finding them.

Events (inotify through watchdog) make new frames show up at once; a reconciling rescan at
start, every `rescan_interval` seconds, after a lost event (full queue) and when the folder
comes back (card re-inserted) makes sure nothing is missed. SD cards, FUSE and network mounts
give no reliable inotify events, so they are polled. Candidates go through a bounded queue that
drops duplicates; the rescan thread waits when it is full, the event thread never does (a full
queue sets off a rescan instead), so a burst cannot exhaust memory and loses nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".edge-tmp", ".swp")
POLLED_FS = (
    "vfat",
    "msdos",
    "exfat",
    "ntfs",
    "fuseblk",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "sshfs",
    "davfs",
    "afpfs",
    "virtiofs",
)


def is_candidate_name(name: str, exts: Iterable[str] = EXTS) -> bool:
    """A frame's file name: right extension, not hidden, not a temp/partial file."""
    low = name.lower()
    if name.startswith((".", "~")) or low.endswith(TEMP_SUFFIXES):
        return False
    return low.endswith(tuple(exts))


def scan(
    root: str | Path,
    *,
    exts: Iterable[str] = EXTS,
    exclude: Iterable[str | Path] = (),
) -> Iterator[Path]:
    """Every candidate frame under `root`, recursively, in no particular order.

    Follows folder symlinks but never twice into the same folder (st_dev, st_ino), so a loop
    cannot hang it; skips `exclude` folders (the output folder when it sits inside the inbox),
    hidden entries and temp files; a folder it may not read is logged and skipped.
    """
    exts = tuple(e.lower() for e in exts)
    excluded = {os.path.realpath(p) for p in exclude}
    seen: set[tuple[int, int]] = set()
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as e:
            log.warning("cannot stat %s: %s", folder, e.strerror or e)
            continue
        if (st.st_dev, st.st_ino) in seen or os.path.realpath(folder) in excluded:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            log.warning("cannot read folder %s: %s", folder, e.strerror or e)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True) and is_candidate_name(entry.name, exts):
                    yield Path(entry.path)
            except OSError:
                continue


def mount_fstype(path: str | Path, mounts: str = "/proc/mounts") -> str | None:
    """Filesystem type of the mount holding `path`, from /proc/mounts (None if unknown)."""
    real = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        return None
    return fstype


def needs_polling(path: str | Path) -> bool:
    """True where inotify events cannot be trusted: removable, FUSE and network filesystems."""
    fstype = mount_fstype(path) or ""
    return fstype in POLLED_FS or fstype.startswith("fuse")


class CandidateQueue:
    """A bounded FIFO of paths that holds each path at most once; `high_water` for the tests."""

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.high_water = 0
        self._items: deque[Path] = deque()
        self._members: set[Path] = set()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, path: Path, *, block: bool = True, timeout: float | None = None) -> bool:
        """Add `path` unless already queued; False when full (and not waited for) or timed out."""
        with self._cond:
            if path in self._members:
                return True
            if block:
                if not self._cond.wait_for(lambda: len(self._items) < self.maxsize, timeout):
                    return False
            elif len(self._items) >= self.maxsize:
                return False
            self._items.append(path)
            self._members.add(path)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
            return True

    def get_batch(self, max_items: int = 64, timeout: float | None = None) -> list[Path]:
        """Up to `max_items` paths; waits up to `timeout` for the first one ([] if none)."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                return []
            out = []
            while self._items and len(out) < max_items:
                p = self._items.popleft()
                self._members.discard(p)
                out.append(p)
            self._cond.notify_all()
            return out


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "modified", "moved", "closed"):
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = Path(os.fsdecode(raw))
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.w.request_rescan(path)  # files may land before the new watch exists
            return
        if self.w.wants(path) and not self.w.queue.put(path, block=False):
            self.w.request_rescan()


class Watcher:
    """Watch `root` and deliver candidate frame paths through `queue` (bounded, de-duplicated).

    `use_polling=None` decides from the filesystem type (and falls back to polling when
    inotify cannot start). `skip(path, stat)` lets a rescan drop frames the journal already
    knows. A vanished root (card pulled) is logged and waited for; when it comes back the
    observer is re-created and the folder rescanned.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        exts: Iterable[str] = EXTS,
        exclude: Iterable[str | Path] = (),
        use_polling: bool | None = None,
        poll_interval: float = 2.0,
        rescan_interval: float = 300.0,
        check_interval: float = 1.0,
        maxsize: int = 1024,
        skip: Callable[[Path, os.stat_result], bool] | None = None,
    ) -> None:
        self.root = Path(root)
        self.exts = tuple(e.lower() for e in exts)
        self.exclude = [Path(p) for p in exclude]
        self._excluded = tuple(os.path.realpath(p) + os.sep for p in self.exclude)
        self.use_polling = use_polling
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.check_interval = check_interval
        self.skip = skip
        self.queue = CandidateQueue(maxsize)
        self.polling: bool | None = None  # what is in use, once started
        self.rescans = 0
        self._observer: Observer | PollingObserver | None = None  # type: ignore[valid-type]
        self._root_id: tuple[int, int] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._rescan_all = True
        self._rescan_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wants(self, path: Path) -> bool:
        """True for a candidate frame name outside the excluded folders."""
        if not is_candidate_name(path.name, self.exts):
            return False
        if self._excluded and os.path.realpath(path).startswith(self._excluded):
            return False
        return True

    def request_rescan(self, folder: Path | None = None) -> None:
        """Ask the background thread to rescan `folder` (the whole root when None)."""
        with self._lock:
            if folder is None:
                self._rescan_all = True
            else:
                self._rescan_dirs.add(folder)
        self._wake.set()

    def start(self) -> Watcher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edge-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._stop_observer()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get_batch(self, max_items: int = 64, timeout: float | None = None) -> list[Path]:
        return self.queue.get_batch(max_items, timeout)

    # -- background thread ------------------------------------------------------------------

    def _start_observer(self) -> None:
        polling = self.use_polling if self.use_polling is not None else needs_polling(self.root)
        if not polling:
            try:
                obs = Observer()
                obs.schedule(_Handler(self), str(self.root), recursive=True)
                obs.start()
                self._observer, self.polling = obs, False
                return
            except OSError as e:  # inotify watch limit, unsupported filesystem
                log.warning("inotify failed on %s (%s); polling instead", self.root, e)
        obs = PollingObserver(timeout=self.poll_interval)
        obs.schedule(_Handler(self), str(self.root), recursive=True)
        obs.start()
        self._observer, self.polling = obs, True

    def _stop_observer(self) -> None:
        obs, self._observer = self._observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(timeout=5)
            except Exception as e:  # noqa: BLE001 - a dead observer must not kill the watcher
                log.debug("observer stop: %s", e)

    def _root_identity(self) -> tuple[int, int] | None:
        try:
            st = self.root.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if os.path.isdir(self.root) else None

    def _rescan(self, folder: Path) -> None:
        for path in scan(folder, exts=self.exts, exclude=self.exclude):
            if self._stop.is_set():
                return
            if self.skip is not None:
                try:
                    if self.skip(path, path.stat()):
                        continue
                except OSError:
                    continue
            while not self.queue.put(path, timeout=0.5):
                if self._stop.is_set():
                    return

    def _run(self) -> None:
        last_rescan = 0.0
        while not self._stop.is_set():
            try:
                rid = self._root_identity()
                if rid is None:
                    if self._root_id is not None or self._observer is not None:
                        log.warning("%s is gone; waiting for it to come back", self.root)
                    self._stop_observer()
                    self._root_id = None
                elif (
                    rid != self._root_id or self._observer is None or not self._observer.is_alive()
                ):
                    self._stop_observer()
                    self._start_observer()
                    how = "polling" if self.polling else "inotify"
                    log.info("watching %s (%s)", self.root, how)
                    self._root_id = rid
                    self._rescan_all = True
                if rid is not None:
                    with self._lock:
                        due = time.monotonic() - last_rescan >= self.rescan_interval
                        full = self._rescan_all or due
                        dirs, self._rescan_dirs = self._rescan_dirs, set()
                        self._rescan_all = False
                    if full:
                        last_rescan = time.monotonic()
                        self._rescan(self.root)
                        self.rescans += 1
                    else:
                        for d in dirs:
                            self._rescan(d)
            except Exception:  # noqa: BLE001 - keep watching whatever a scan hits
                log.exception("watcher error; retrying")
            self._wake.wait(self.check_interval)
            self._wake.clear()
