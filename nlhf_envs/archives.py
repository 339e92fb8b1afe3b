"""Bounded reading of zip archives from users: ``.npz`` checkpoints, torch files, SB3 ``.zip`` models.

A zip member declares its uncompressed size, and a few kilobytes of deflated zeros can declare
gigabytes (a "zip bomb"). :func:`open_zip` checks the whole central directory before a single member
is read:

* the file is a zip archive, none of its members is encrypted, and each is stored or deflated (the
  methods numpy, torch and Stable-Baselines3 write);
* every member's compressed size fits in the file, and a stored member declares exactly what it holds;
* the declared uncompressed total is at most :data:`MAX_EXPANSION` times the file's size (plus
  :data:`SLACK_BYTES` for small files). Python's zip reader never returns more than a member
  declares, so this bounds the memory a file can make a loader use to a multiple of its own size.

Every failure is a :class:`~nlhf_envs.errors.CheckpointError` naming the file and the member.
"""

from __future__ import annotations

import os
import zipfile

from nlhf_envs.errors import CheckpointError

__all__ = ["MAX_EXPANSION", "SLACK_BYTES", "open_zip", "READ_ERRORS"]

#: the largest ratio of declared uncompressed bytes to file bytes an archive may have. Weights and
#: JSON compress by 1.1x to 10x; only crafted content (long runs of one byte) exceeds 64x.
MAX_EXPANSION = 64

#: bytes every archive may declare on top of ``MAX_EXPANSION`` times its size (small JSON members).
SLACK_BYTES = 1 << 20

#: what reading a damaged archive can raise besides :class:`~nlhf_envs.errors.CheckpointError`
#: (a flipped bit in a header reaches zlib, struct or the zip reader's own checks).
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
    UnicodeDecodeError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
)

try:  # zlib.error: a corrupt deflate stream
    import zlib

    READ_ERRORS = (*READ_ERRORS, zlib.error)
except ImportError:  # pragma: no cover - zlib is part of every CPython build that reads zips
    pass


def open_zip(
    path: str | os.PathLike[str], *, what: str = "archive", max_expansion: int = MAX_EXPANSION
) -> zipfile.ZipFile:
    """Open the zip archive at ``path`` after checking its directory (see the module docstring).

    Args:
        path: the file.
        what: what the file should be, for messages (``"agent checkpoint"``, ``"SB3 model"``).
        max_expansion: the bound on declared uncompressed bytes per file byte.

    Returns:
        The open :class:`zipfile.ZipFile` (close it, or use it in a ``with`` block).

    Raises:
        CheckpointError: naming the file (and member) when it is missing, not a zip archive, or
            declares more than it may.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CheckpointError(f"no {what} at {p!r}")
    size = os.path.getsize(p)
    try:
        zf = zipfile.ZipFile(p)
    except READ_ERRORS as err:
        raise CheckpointError(
            f"{p!r} is not a readable {what} (not a zip archive: {err})"
        ) from None
    try:
        total = 0
        for info in zf.infolist():
            name = info.filename
            if info.flag_bits & 0x1:
                raise CheckpointError(f"{p!r}: member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise CheckpointError(
                    f"{p!r}: member {name!r} uses compression method {info.compress_type} "
                    "(only stored and deflated members are read)"
                )
            if info.compress_size > size or info.file_size < 0:
                raise CheckpointError(
                    f"{p!r}: member {name!r} declares {info.compress_size} bytes in a "
                    f"{size}-byte file"
                )
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise CheckpointError(
                    f"{p!r}: member {name!r}: stored size and declared size differ"
                )
            total += info.file_size
        limit = max_expansion * size + SLACK_BYTES
        if total > limit:
            raise CheckpointError(
                f"{p!r} declares {total} uncompressed bytes in a {size}-byte file (more than "
                f"{max_expansion}x its size): refused as a decompression bomb"
            )
    except BaseException:
        zf.close()
        raise
    return zf
