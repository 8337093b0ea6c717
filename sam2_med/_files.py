"""Small file-system helpers shared by readers and writers: regular-file checks, the umask.

Nothing here imports numpy, torch or napari.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from .errors import Sam2MedError

__all__ = ["check_regular_file", "current_umask", "umask_file_mode"]

_UMASK_LOCK = threading.Lock()


def check_regular_file(
    path: str | os.PathLike[str], what: str = "input", error: type[Sam2MedError] = Sam2MedError
) -> Path:
    """Refuse a path that is not a regular file (a FIFO, socket or device would block a read).

    Parameters
    ----------
    path : path-like
        The file (symbolic links are followed).
    what : str
        What the file is, for the message (``"image"``, ``"prompt file"``...).
    error : type
        The :class:`~sam2_med.errors.Sam2MedError` subclass to raise.

    Returns
    -------
    Path

    Raises
    ------
    Sam2MedError
        The path is a FIFO, socket, character or block device (or anything but a regular file
        or a folder); the message names it. A missing path is left to the caller.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        return p
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return p
    kind = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "not a regular file"
    )
    raise error(f"is {kind}, not a file; sam2-med reads a {what} only from a regular file", p)


def current_umask() -> int:
    """The process umask (read from ``/proc/self/status`` where possible, else set and reset
    under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def umask_file_mode() -> int:
    """Permission bits a new file gets from ``open()``: ``0o666`` less the umask.

    ``tempfile.mkstemp`` creates files readable by their owner only (0600); a file published
    from such a temporary file is ``chmod``-ed to this mode, so outputs are shared as the
    user's umask says (0644 under the usual 022, group-readable under 002).
    """
    return 0o666 & ~current_umask()
