"""Writing files so that a crash, a kill or a full disk never leaves half a file under the real name.

Every file the package writes goes through `atomic_open` (or `atomic_path` for libraries that insist on a path):
the bytes go to a temporary name in the *same* folder, are flushed to disk, and only then renamed over the real
name. A rename within one filesystem is atomic, so readers see the old file or the new one, never a mixture, and a
failed write leaves the previous version (the previous checkpoint, say) as it was. Writing elsewhere and copying
across filesystems, as some libraries do, gives no such guarantee.

Temporary names start with '.' and end in `.tmp<suffix>` (the suffix kept, so libraries that pick a format from
the extension still do); `remove_stale_temps` clears the ones a killed process left behind.

A folder a command writes into is held with `lock_folder` while the command runs: a second command into the same
folder is refused (naming the process that holds it) instead of mixing its files with the first's. The lock is an
flock on `<folder>/.mambadna.lock`, which the kernel drops when its process dies, so a crashed or killed run never
leaves its folder stuck; the file records who holds it (pid, host, start time, command) for the refusal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path

TEMP_MARK = ".tmp"
LOCK_NAME = ".mambadna.lock"
# flock is refused by some network filesystems; there the lock file's pid is checked instead
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)

# the function every write opens its temporary file with; tests replace it to simulate a full disk
_open = open


def temp_sibling(final: Path) -> Path:
    """A fresh temporary name next to `final`, keeping its suffix (`.x.ckpt` -> `..x.<id>.tmp.ckpt`)."""
    final = Path(final)
    return final.with_name(f".{final.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_MARK}{final.suffix}")


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") and TEMP_MARK in path.name


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left in `folder` (not recursive); returns what was removed."""
    removed = []
    if Path(folder).is_dir():
        for path in Path(folder).iterdir():
            if path.is_file() and is_temp(path):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


def _fsync(path: Path) -> None:
    """Flush a file (its bytes) or a folder (a rename in it) to the disk; not every platform opens folders."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _with_path(err: OSError, final: Path) -> OSError:
    """The same OSError (errno kept) naming the file the user knows, not the temporary one."""
    if isinstance(err, OSError) and err.errno is not None:
        return type(err)(err.errno, err.strerror or os.strerror(err.errno), str(final))
    return err


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside `final`; when the block ends without error it is renamed to `final`."""
    final = Path(final)
    tmp = temp_sibling(final)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
    except OSError as err:
        raise _with_path(err, final) from err
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()
    _fsync(final.parent)  # the rename itself must reach the disk too


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike, mode: str = "w", **kwargs):
    """`open(final, mode)` that only replaces `final` once everything was written (mode "w"/"wb" and variants)."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes whole files; mode must contain 'w', got {mode!r}")
    # the file is closed (flushed) before atomic_path syncs it and renames it into place
    with atomic_path(final) as tmp, _open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text(final: str | os.PathLike, text: str) -> Path:
    with atomic_open(final, "w") as fh:
        fh.write(text)
    return Path(final)


def write_bytes(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(final, "wb") as fh:
        fh.write(data)
    return Path(final)


def write_json(final: str | os.PathLike, obj) -> Path:
    return write_text(final, json.dumps(obj, indent=2) + "\n")


def check_writable_folder(folder: str | os.PathLike, what: str = "--out") -> Path:
    """Create `folder` if needed and prove a file can be written there, else a ValueError naming it and `what`."""
    folder = Path(folder)
    probe = folder / ".mambadna-write-test"
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it exists and is not a folder", str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        write_text(probe, "ok\n")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ValueError(f"cannot write to {what} {folder}: {reason}; choose a folder you can write to") from None
    return folder


class _Lock:
    def __init__(self, fd: int, path: Path, created: list[Path]):
        self.fd, self.path, self.created = fd, path, created  # created: folders made for it, innermost first


_held: dict[Path, _Lock] = {}  # resolved folder -> the lock this process holds on it


def _holder(path: Path) -> str:
    """Who holds a lock file, as its contents say."""
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(path.read_text())
        return (f"`mambadna {info['command']}` (pid {info['pid']} on {info['host']}, started {info['started']}); "
                f"wait until it ends or stop it (kill {info['pid']})")
    return "another process (it is starting); wait until it ends"


def _held_elsewhere(path: Path) -> bool:
    """Where flock is unavailable: does the lock file name a live process (another host's is assumed live)?"""
    try:
        info = json.loads(path.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if info.get("host") != socket.gethostname():
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_folder(folder: str | os.PathLike, command: str, what: str = "--out") -> Path:
    """Hold `folder` (created if missing) for this process until `release_folder` or the process ends; a
    ValueError naming the holder when another live process holds it. Holding it again in the same process is a
    no-op."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        return folder
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _lock(folder, key, command, what, created)
    except OSError as err:
        reason = "a part of it is a file" if isinstance(err, FileExistsError) or err.errno == errno.ENOTDIR \
            else (err.strerror or str(err))
        raise ValueError(f"cannot write to {what} {folder}: {reason}; choose a folder you can write to") from None


def _lock(folder: Path, key: Path, command: str, what: str, created: list[Path]) -> Path:
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"{what} {folder} is in use by {_holder(path)}; or choose another {what}") from None
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                os.close(fd)
                raise
            if _held_elsewhere(path):
                os.close(fd)
                raise ValueError(f"{what} {folder} is in use by {_holder(path)}; or choose another {what}") from None
        # the holder before us may have removed the file between our open and our lock: hold the file that is there
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    _held[key] = _Lock(fd, path, created)
    return folder


def release_folder(folder: str | os.PathLike, moved_to: str | os.PathLike | None = None) -> None:
    """Let go of a folder this process holds (`moved_to`: where it has been renamed since). A folder that the lock
    created and that nothing was written into is removed again, so a refused or failed command leaves no trace."""
    lock = _held.pop(Path(folder).resolve(), None)
    if lock is None:
        return
    path = Path(moved_to) / LOCK_NAME if moved_to else lock.path
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == os.fstat(lock.fd).st_ino:
            path.unlink()  # while still holding it, so no one locks a file that is about to go
    os.close(lock.fd)
    if moved_to is None:
        for made in lock.created:
            with contextlib.suppress(OSError):
                made.rmdir()  # only when empty


def release_all() -> None:
    for folder in list(_held):
        release_folder(folder)
