"""The labs running in this process, by name, so that none outlives its welcome.

A notebook cell that creates a lab may run many times: a new lab stops the previous
lab of the same name first (:func:`replace`), so no old server keeps a port or a
thread. Labs with different names live side by side. :func:`stop_all` stops every lab still
running; the lab module registers it to run when the process exits.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...


_running: dict[str, Stoppable] = {}
_lock = threading.Lock()


def replace(name: str) -> None:
    """Stop the running lab called ``name``, if there is one."""
    with _lock:
        previous = _running.pop(name, None)
    if previous is not None:
        previous.stop()


def register(name: str, lab: Stoppable) -> None:
    """Remember ``lab`` as the running lab called ``name``."""
    with _lock:
        _running[name] = lab


def forget(name: str, lab: Stoppable) -> None:
    """``lab`` has stopped: forget it, unless another lab has taken its name since."""
    with _lock:
        if _running.get(name) is lab:
            del _running[name]


def stop_all() -> None:
    """Stop every lab still running (:mod:`smtplab.lab` calls it when the process exits)."""
    with _lock:
        labs = list(_running.values())
    for lab in labs:
        lab.stop()
