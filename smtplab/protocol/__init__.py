"""SMTP and message rules as data and pure functions, with no I/O.

Paths, replies, DSNs, building and reading messages.
"""

import importlib
import warnings

#: Rules renamed in 0.2: old name → new name in :mod:`smtplab.protocol.rules`.
RENAMED = {"END_OF_DATA": "DATA_TERMINATOR"}


def __getattr__(name: str) -> object:
    """``from smtplab.protocol import parse_path``, as in smtplab 0.1, when this package was
    one module (now :mod:`smtplab.protocol.rules`): with a DeprecationWarning, for one release
    (see :mod:`smtplab.moved`)."""
    rules = importlib.import_module("smtplab.protocol.rules")  # not `from . import`: it asks us
    now = RENAMED.get(name, name)
    if name.startswith("__") or not hasattr(rules, now):
        raise AttributeError(f"module 'smtplab.protocol' has no attribute {name!r}")
    warnings.warn(
        f"smtplab.protocol.{name} moved in smtplab 0.2: import {now} from smtplab.protocol.rules;"
        " the old path goes in smtplab 0.3",
        DeprecationWarning,
        stacklevel=2,
    )
    globals()[name] = value = getattr(rules, now)  # warned once: found directly from now on
    return value
