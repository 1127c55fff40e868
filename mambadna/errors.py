"""The CLI's error boundary: every failure becomes one `error:` line, saying what went wrong and where.

A failure the user can cause or fix (bad files, bad values, resources such as disk and memory, the environment
such as a missing GPU) is exit code 2. Anything else is a bug in mambadna: exit code 1, with the exception in one
line and a pointer to `--debug` for the traceback.
"""

from __future__ import annotations

import errno
import re
import sys

# Lightning's exception for settings it cannot honour (devices, precision, strategy on this machine)
USER_EXCEPTION_NAMES = ("MisconfigurationException",)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def os_error_message(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    reason = err.strerror or _first_line(err)
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        full = "no space left on the device" if err.errno == errno.ENOSPC else "disk quota exceeded"
        return (f"{full} while writing{where}; free some space or choose another --out (files written before, "
                "earlier checkpoints included, are intact; no half-written file is left under a real name)")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot access{where}: {reason}; choose a location you can read and write (for outputs: --out)"
    if err.errno == errno.ENOENT:
        return f"no such file or folder:{where}" if where else f"no such file or folder ({reason})"
    if err.errno == errno.ENOTDIR:
        return f"a part of{where} is a file, not a folder"
    if err.errno == errno.EISDIR:
        return f"{where.strip() or 'the path'} is a folder, not a file"
    return f"{where.strip() + ': ' if where else ''}{reason}"


def error_line(err: Exception) -> tuple[str, int]:
    """(message, exit code) for an exception that reached the CLI."""
    torch = sys.modules.get("torch")  # no import just to classify an error: it takes seconds
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return (f"out of GPU memory ({_first_line(err)[:120]}); use a smaller --batch-size, a shorter sequence, or "
                "--chunk-bp", 2)
    if isinstance(err, MemoryError):
        return "out of memory (host RAM); use smaller batches or shorter sequences", 2
    if isinstance(err, UnicodeDecodeError):
        return f"a file read as text is not UTF-8 text ({err}); check the file arguments", 2
    if isinstance(err, ValueError):
        return _first_line(err), 2  # mambadna.data.DataError and every checked setting are ValueErrors
    if isinstance(err, OSError):
        return os_error_message(err), 2
    if isinstance(err, re.error):
        return f"not a valid regular expression ({err})", 2
    if type(err).__name__ in USER_EXCEPTION_NAMES:
        return f"{_first_line(err)} (Lightning)", 2
    return f"internal error: {type(err).__name__}: {_first_line(err)[:200]} (a bug in mambadna; please report it)", 1


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the CLI: Python prints a warning with its source line under it; a user needs the
    message only."""
    stream = file if file is not None else sys.stderr
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    try:
        stream.write(f"warning: {text}\n")
    except (OSError, ValueError):
        pass
