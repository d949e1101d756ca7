"""Writing outputs to files: every file convcheck writes goes through :func:`write_atomic`.

What a path is decides how it is written, so that writing a report can never destroy what is there:

- a regular file (or a new one) is replaced atomically: the text goes to a temporary file in the same folder,
  is flushed to disk, and is renamed over the target; a reader sees the old file or the new one, never half;
- a symlink is written *through*: its target is replaced (or created), the link itself stays;
- a character device (``/dev/null``, ``/dev/stdout``, a terminal) or a FIFO is written into, never replaced
  (``--json /dev/null`` must not delete the system's ``/dev/null``); a FIFO nobody reads is an error, not a hang;
- a folder, a socket or a symlink loop is refused.

Every failure is an ``OSError`` whose ``filename`` is the path and whose ``strerror`` says why in words
(``no space left on the device``, ``is a folder``…), so the caller reports it without knowing these cases.

Temporary files are never left empty and hidden. Where Linux offers ``O_TMPFILE`` the text is written into an
unnamed file that only gets a name (``.NAME.PID.RANDOM.convcheck-tmp``) once it is complete, just before the
rename; elsewhere the named file is written directly. Either way a run that is killed (``kill -9``) can leave
such a file behind, so every write first removes the ones of its target whose process no longer exists.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path

__all__ = ["TEMP_SUFFIX", "clean_stale_temporaries", "output_problem", "write_atomic"]

TEMP_SUFFIX = ".convcheck-tmp"  # temporary files are .NAME.PID.RANDOM.convcheck-tmp, next to their target
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")

# What an errno means, in the words of a report ("could not write PATH: REASON").
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ELOOP: "a symlink loop (the link points, directly or not, at itself)",
    errno.EISDIR: "is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENXIO: "a FIFO (named pipe) that nobody is reading",
    errno.EPIPE: "the reader of the pipe went away",
    errno.EIO: "an input/output error of the device",
    errno.ENAMETOOLONG: "the file name is too long",
}


# Why linking an unnamed file can fail although writing it worked: then the named temporary file is used.
_UNNAMED_UNSUPPORTED = frozenset(
    {errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOTDIR, errno.EOPNOTSUPP}
)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` as the module docstring describes.

    Args:
        path: the file; its folder is created if missing.
        data: the whole content.
    Raises:
        OSError: the file could not be written; ``filename`` is ``path`` and ``strerror`` the reason in words.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    name = str(path)
    try:
        target, mode = _resolve(Path(path))
        if mode is not None and not stat.S_ISREG(mode):
            _write_through(target, mode, payload)
        else:
            _replace(target, mode, payload)
    except OSError as exc:
        raise _described(exc, name) from None


def output_problem(path: str | Path, *, folder: bool = False) -> str | None:
    """Why ``write_atomic`` could not write ``path`` (or, with ``folder``, files into it), or None.

    For refusing an output before anything runs: a device or a FIFO is fine (it is written into), a symlink
    is judged by its target, and a file that does not exist yet needs a writable folder to be created in.
    """
    try:
        target, mode = _resolve(Path(path))
    except OSError as exc:
        return _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    if mode is not None and stat.S_ISDIR(mode):
        return None if folder else _REASONS[errno.EISDIR]
    if folder and mode is not None:
        return "is not a folder"
    if mode is not None and stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    if mode is not None and not stat.S_ISREG(mode):
        return None  # a device or a FIFO: written into
    directory = target if folder else target.parent
    existing = next((d for d in (directory, *directory.parents) if d.exists()), None)
    if existing is None or not existing.is_dir():
        return f"cannot be created ({existing} is not a folder)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be written ({existing} is not writable)"
    return None


def clean_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files of ``target`` left by writes whose process has died; the paths removed."""
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or match.group("name") != target.name or _alive(int(match.group("pid"))):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # another run cleaned it, or the folder is not ours to clean: not this write's problem
    return removed


def _resolve(path: Path) -> tuple[Path, int | None]:
    """The file a write of ``path`` lands in (symlinks followed) and its ``st_mode`` (None: it does not exist).

    Raises:
        OSError: ``ELOOP`` for a symlink loop, ``ENOTDIR`` when a part of the path is a file, ….
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path, None
    if not stat.S_ISLNK(mode):
        return path, mode
    try:
        os.stat(path)  # ELOOP for a loop
    except FileNotFoundError:
        return Path(os.path.realpath(path)), None  # a dangling link: its target is created
    target = Path(os.path.realpath(path))
    return target, os.stat(target).st_mode


def _write_through(target: Path, mode: int, payload: bytes) -> None:
    """A device or FIFO is written into (never replaced); folders and sockets are refused."""
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, _REASONS[errno.EISDIR], str(target))
    if stat.S_ISSOCK(mode):
        raise OSError(errno.EINVAL, "is a socket, not a file", str(target))
    flags = os.O_WRONLY | (os.O_NONBLOCK if stat.S_ISFIFO(mode) else 0)
    fd = os.open(target, flags)
    try:
        if stat.S_ISFIFO(mode):
            os.set_blocking(fd, True)  # open must not wait for a reader; the writes may
        _write_all(fd, payload)
    finally:
        os.close(fd)


def _replace(target: Path, mode: int | None, payload: bytes) -> None:
    """Replace (or create) the regular file ``target`` atomically, keeping an existing file's permissions."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target)
    permissions = stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask()
    temporary = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        if not _complete_unnamed(folder, temporary, permissions, payload):
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _fill(fd, permissions, payload)
            finally:
                os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _complete_unnamed(folder: Path, temporary: Path, permissions: int, payload: bytes) -> bool:
    """Write ``payload`` into an unnamed file (Linux ``O_TMPFILE``) and name it ``temporary`` once complete.

    False where the system or the file system cannot (then nothing was created); a write error is raised.
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return False
    try:
        fd = os.open(folder, flag | os.O_WRONLY, 0o600)
    except OSError:
        return False  # EOPNOTSUPP, EISDIR on old kernels, …: the named temporary file does the job
    try:
        _fill(fd, permissions, payload)
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.link(str(fd), temporary, src_dir_fd=proc, follow_symlinks=True)  # linkat(AT_SYMLINK_FOLLOW)
        finally:
            os.close(proc)
    except OSError as exc:
        if exc.errno in _UNNAMED_UNSUPPORTED:
            return False
        raise
    finally:
        os.close(fd)
    return True


def _fill(fd: int, permissions: int, payload: bytes) -> None:
    os.fchmod(fd, permissions)  # the 0600 of a temporary file would hide CI artifacts from other users
    _write_all(fd, payload)
    os.fsync(fd)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # a write of this process in progress (another thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process: leave its file alone
    return True


def _described(exc: OSError, name: str) -> OSError:
    """``exc`` with ``filename`` the path as the user gave it and ``strerror`` in words."""
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    if exc.errno == errno.ENOENT and exc.filename not in (None, name):
        reason = f"no such folder {exc.filename}"
    return type(exc)(exc.errno or 0, reason, name)
