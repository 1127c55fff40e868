"""The error (and warning) every bad data input in mambadna.data is reported with."""


class DataError(ValueError):
    """A problem with user-supplied data: a file, a manifest, a contig, an argument.

    The message names the file (and contig and offset where they apply) and says how to fix it, so callers can
    show it as is instead of a traceback from deep inside pyfaidx or Biopython.
    """


class DataWarning(UserWarning):
    """Something was done on the user's behalf (a conversion, an index rebuilt in the cache) worth knowing about."""


class WindowTooLong(DataError):
    """No region of a split holds one window (the caller may try a shorter one)."""
