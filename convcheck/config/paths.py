"""What a config path is, and reading a config file within bounds: the loader's only contact with the disk.

Every path that is not a config file is named for what it is (a symlink loop, a FIFO, a device such as
``/dev/zero``, standard input ``-``), instead of "no such file". A file is read only when it is a regular
file no larger than ``MAX_CONFIG_BYTES``: a 50 MB file, whatever it holds (checks or comments), is refused
from its size before a byte is parsed, and a FIFO or ``/dev/zero`` is never read at all.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from convcheck.config.errors import ConfigError, file_error

__all__ = ["MAX_CONFIG_BYTES", "path_kind", "read_config_bytes"]

# A config of a few hundred checks is a few tens of kB; sweeps cost lines, not checks. 1 MiB also keeps the
# time to parse the largest allowed file around a second.
MAX_CONFIG_BYTES = 2**20

_STDIN = "'-' (standard input): configs are read from files; save the config to a file and give its path"
_FILE = "a regular YAML file no larger than 1 MiB"


def path_kind(path: Path) -> str | None:
    """``None`` for a regular file, ``"folder"`` for a folder, else what the path is, as a message."""
    if str(path) == "-":
        return _STDIN
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return _stat_problem(path, exc)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    return _special(mode)


def read_config_bytes(path: Path) -> bytes | ConfigError:
    """The bytes of the config file ``path``, or the error that says why it cannot be one."""
    name = str(path)
    if name == "-":
        return file_error(name, _STDIN, _FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open: it is refused below
    except OSError as exc:
        return file_error(name, _stat_problem(path, exc), _FILE)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return file_error(name, "is a folder, not a file", _FILE)
        if not stat.S_ISREG(info.st_mode):
            return file_error(name, _special(info.st_mode), _FILE)
        if info.st_size > MAX_CONFIG_BYTES:
            return file_error(name, _too_large(info.st_size), _FILE)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # the file may have grown since fstat
    except OSError as exc:
        return file_error(name, f"cannot read the file: {exc.strerror or exc}", _FILE)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        return file_error(name, _too_large(len(data)), _FILE)
    return data


def _too_large(size: int) -> str:
    return (
        f"the file is {size / 2**20:.1f} MiB; a config may be at most {MAX_CONFIG_BYTES // 2**20} MiB "
        "(a list value sweeps: one check can expand to thousands)"
    )


def _stat_problem(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be looked at, in words."""
    if exc.errno == errno.ELOOP:
        return "a symlink loop (the link points, directly or not, at itself)"
    if exc.errno == errno.ENOENT:
        if os.path.islink(path):
            return f"a symlink to a missing file ({os.readlink(path)})"
        return "no such file or folder"
    if exc.errno == errno.EACCES:
        return "permission denied"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is not a folder"
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long"
    return f"cannot read the file: {exc.strerror or exc}"


def _special(mode: int) -> str:
    """What a path that is neither a regular file nor a folder is."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a config file: convcheck reads configs from regular files"
    if stat.S_ISCHR(mode):
        return "a character device (such as /dev/zero or a terminal), not a config file"
    if stat.S_ISBLK(mode):
        return "a block device (a disk), not a config file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a config file"
    return "not a regular file"
