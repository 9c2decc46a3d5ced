"""Where the lab writes: every path made from a name stays inside the lab's folder.

One lab at a time may use a folder (:class:`RootLock`): two labs on one root
would each number their queue entries from the same spool and replace each
other's queued mail.

Names come from outside: a user's address from a ``--world`` file names their
Maildir, a host name its queue, a folder name (``lab.mailbox(..., folder=)``) a
Maildir++ subfolder. A name such as ``../../outside`` or ``/abs/path`` would
otherwise put mail, queues and Dovecot homes anywhere on the machine. So
everything that turns a name into a path asks :func:`inside`, which accepts
only plain names (no ``/``, ``\\``, NUL, ``.`` or ``..``) and checks that the
result, with every symbolic link followed, is still under the folder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from smtplab.protocol.message import InvalidInput

LOCK_FILE = ".smtplab.lock"


def inside(folder: Path, *names: str, field: str) -> Path:
    """``folder / name / ...``, or InvalidInput (naming ``field``) if it would leave ``folder``."""
    path = folder
    for name in names:
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise InvalidInput(field, f"{name!r} cannot name a file or folder of the lab")
        path = path / name
    top = folder.resolve()
    if not path.resolve().is_relative_to(top):
        raise InvalidInput(field, f"{'/'.join(names)!r} would lead outside {top}")
    return path


class RootLock:
    """The lab's claim on its folder: an exclusive ``flock`` on ``ROOT/.smtplab.lock``,
    which the kernel releases whenever the process ends, killed or not."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "?"
            self.release()
            raise InvalidInput(
                "root", f"{root} is in use by another lab (process {holder}); stop it first"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Give the folder up (closing the file drops the lock); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
