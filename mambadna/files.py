"""Writing files so that a crash, a kill or a full disk never leaves half a file under the real name.

Every file the package writes goes through `atomic_open` (or `atomic_path` for libraries that insist on a path):
the bytes go to a temporary name in the *same* folder, are flushed to disk, and only then renamed over the real
name. A rename within one filesystem is atomic, so readers see the old file or the new one, never a mixture, and a
failed write leaves the previous version (the previous checkpoint, say) as it was. Writing elsewhere and copying
across filesystems, as some libraries do, gives no such guarantee.

Temporary names start with '.' and end in `.tmp<suffix>` (the suffix kept, so libraries that pick a format from
the extension still do); `remove_stale_temps` clears the ones a killed process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from pathlib import Path

TEMP_MARK = ".tmp"

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
