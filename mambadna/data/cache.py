"""Where mambadna writes what it derives from a user's file (indexes, conversions, statistics).

Derived files go next to the input when that folder is writable (indexes only) or into a cache folder:
``$MAMBADNA_CACHE`` if set, else ``$XDG_CACHE_HOME/mambadna`` (the XDG base-directory convention), else
``~/.cache/mambadna``. Cache entries are keyed by the input's absolute path,
mtime and size, so editing the input invalidates them without anyone deleting anything.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path

from mambadna.data.errors import DataError


def cache_dir() -> Path:
    """The cache folder, created if needed."""
    root = os.environ.get("MAMBADNA_CACHE")
    if not root:
        # XDG says a relative XDG_CACHE_HOME is invalid and must be ignored
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "mambadna")
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the mambadna cache folder {path} ({exc}); set MAMBADNA_CACHE to a "
                        "writable folder") from exc
    return path


def file_key(path: Path) -> str:
    """A short key that changes whenever the file at ``path`` is replaced or edited (path + mtime + size)."""
    st = path.stat()
    text = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def path_key(path: Path) -> str:
    """A short key for the location of ``path`` only (for indexes, which carry their own staleness check)."""
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]


def cached_path(kind: str, key: str, name: str) -> Path:
    """``<cache>/<kind>/<key>-<name>``; the folder is created."""
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}-{name}"


def is_writable_dir(folder: Path) -> bool:
    """True when a file can really be created in ``folder`` (os.access lies under root and on some mounts)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mambadna-probe-"):
            return True
    except OSError:
        return False


def atomic_write_target(final: Path) -> Path:
    """A temporary sibling of ``final``; write there, then ``os.replace`` so a crash never leaves half a file."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def derived_write_error(exc: OSError, what: str, source: Path) -> DataError | None:
    """For an OSError met while writing something derived from `source` (an index, a conversion, counts): a
    DataError naming a full or read-only disk where it was written, or None when it is about `source` itself."""
    if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EROFS, errno.EACCES):
        return None
    if exc.filename and Path(exc.filename).resolve() == Path(source).resolve():
        return None  # reading the input failed: that is the input's problem
    where = exc.filename or "the mambadna cache"
    return DataError(f"cannot write the {what} of {source} to {where} ({exc.strerror}); the input is fine: free "
                     "space there, or set MAMBADNA_CACHE to a folder with room")


@contextlib.contextmanager
def writing_derived(what: str, source: Path):
    """`derived_write_error` around a block (the input is only ever read: a full cache is not its fault)."""
    try:
        yield
    except OSError as exc:
        error = derived_write_error(exc, what, source)
        if error is None:
            raise
        raise error from None
