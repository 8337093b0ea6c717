"""All-or-nothing file output: temp file in the destination folder, fsync, then rename.

A reader (or a crash) sees either the old file or the complete new one, never a partial file.
The files of one call (a mask, its sidecar, a DICOM SEG) are published while the destination
folders are locked (``flock``), so two runs writing the same outputs at once replace them one
run after the other, never leaving one run's mask beside the other's sidecar. New files get the
permissions ``open()`` would give them (``0o666`` less the umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .._files import umask_file_mode
from .errors import MaskWriteError, OutputExistsError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, publishing is unlocked
    fcntl = None  # type: ignore[assignment]

__all__ = ["check_writable", "write_files_atomically"]

EXISTS = "already exists; pass overwrite=True to replace it"
EXISTS_CLI = "already exists; give --overwrite to replace it"


def check_writable(
    paths: list[Path], *, overwrite: bool, folders_may_be_missing: bool = False
) -> None:
    """Refuse early (before any work) outputs that exist or whose folder is missing.

    ``folders_may_be_missing``: the caller creates missing folders before writing.

    Raises
    ------
    OutputExistsError
        One of ``paths`` exists and ``overwrite`` is false.
    MaskWriteError
        A folder does not exist, or an output path is a folder.
    """
    for p in paths:
        if not p.parent.is_dir() and not (folders_may_be_missing and not p.parent.exists()):
            raise MaskWriteError("the output folder does not exist", p.parent)
        if p.is_dir():
            raise MaskWriteError("the output path is a folder", p)
        if (p.exists() or p.is_symlink()) and not overwrite:
            raise OutputExistsError(EXISTS, p, cli=EXISTS_CLI)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: str, dest: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)  # fails, rather than replaces, if someone created dest meanwhile
    except FileExistsError:
        raise OutputExistsError(EXISTS, dest, cli=EXISTS_CLI) from None
    except OSError:  # filesystems without hard links
        if dest.exists():
            raise OutputExistsError(EXISTS, dest, cli=EXISTS_CLI) from None
        os.replace(tmp, dest)


@contextlib.contextmanager
def _locked_folders(folders: Iterable[Path]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on each folder (sorted, so two writers never deadlock);
    closing the descriptors releases them. Best effort where a filesystem has no locks."""
    fds: list[int] = []
    try:
        if fcntl is not None:
            for folder in sorted({os.path.abspath(f) for f in folders}):
                try:
                    fd = os.open(folder, os.O_RDONLY)
                except OSError:
                    continue
                fds.append(fd)
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)


def write_files_atomically(contents: Mapping[Path, bytes], *, overwrite: bool) -> None:
    """Write several files so that each appears complete or not at all.

    Every file is first written to a hidden temporary file in its destination folder and
    fsync'ed; only when all are on disk are they moved into place (``os.replace``, atomic on
    POSIX and Windows within one filesystem). With ``overwrite=False`` the move uses
    ``os.link``, which fails instead of replacing a file created meanwhile by someone else.
    On any failure the temporary files are removed and nothing new is left behind. The moves
    of one call happen while the destination folders are locked, so the files of one call are
    replaced together with respect to any other call (another process included). Files get
    mode ``0o666`` less the umask.

    Parameters
    ----------
    contents : mapping of Path -> bytes
        Destination path -> the file's complete contents, in the order to publish them.
    overwrite : bool
        Replace existing destinations.

    Raises
    ------
    OutputExistsError
        A destination exists and ``overwrite`` is false.
    MaskWriteError
        The folder is missing or not writable, the disk is full, ...
    """
    paths = list(contents)
    check_writable(paths, overwrite=overwrite)
    temps: dict[Path, str] = {}
    published: list[Path] = []
    try:
        for dest, data in contents.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            temps[dest] = tmp
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if hasattr(os, "fchmod"):
                    os.fchmod(fh.fileno(), umask_file_mode())
                os.fsync(fh.fileno())
        with _locked_folders(p.parent for p in paths):
            for dest, tmp in temps.items():
                _publish(tmp, dest, overwrite=overwrite)
                published.append(dest)
        for folder in {p.parent for p in paths}:
            _fsync_dir(folder)
    except BaseException as exc:
        if not overwrite:  # only files this call created may be removed
            for dest in published:
                with contextlib.suppress(OSError):
                    dest.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, MaskWriteError):
            raise MaskWriteError(f"cannot write ({exc.strerror or exc})", exc.filename) from exc
        raise
    finally:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
