"""Where the lab writes: every path made from a name stays inside the lab's folder.

Names come from outside: a user's address from a ``--world`` file names their
Maildir, a host name its queue, a folder name (``lab.mailbox(..., folder=)``) a
Maildir++ subfolder. A name such as ``../../outside`` or ``/abs/path`` would
otherwise put mail, queues and Dovecot homes anywhere on the machine. So
everything that turns a name into a path asks :func:`inside`, which accepts
only plain names (no ``/``, ``\\``, NUL, ``.`` or ``..``) and checks that the
result, with every symbolic link followed, is still under the folder.
"""

from __future__ import annotations

from pathlib import Path

from smtplab.compose import InvalidInput


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
