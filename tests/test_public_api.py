"""The public API is ``smtplab.__all__``: every name there exists, and every smtplab type a
reader gets back from a ``Lab`` (an attribute, or what a public method returns) is in it."""

from __future__ import annotations

import inspect
import typing

import smtplab
from smtplab import Lab


def _smtplab_classes(hint: object) -> set[type]:
    """The smtplab classes a type hint names, inside unions and generics too."""
    found: set[type] = set()
    if isinstance(hint, type) and hint.__module__.startswith("smtplab"):
        found.add(hint)
    for argument in typing.get_args(hint):
        found |= _smtplab_classes(argument)
    return found


def test_every_exported_name_exists() -> None:
    assert [name for name in smtplab.__all__ if not hasattr(smtplab, name)] == []


def test_what_a_lab_hands_out_is_exported(lab: Lab) -> None:
    handed_out: set[type] = set()
    for name, member in inspect.getmembers(Lab, inspect.isfunction):
        if not name.startswith("_"):
            hints = typing.get_type_hints(member)
            returned = hints.get("return")
            if name == "eavesdrop":  # a context manager: what its block gets
                returned = typing.get_args(returned)[0]
            handed_out |= _smtplab_classes(returned)
    for name, value in vars(lab).items():
        if not name.startswith("_"):
            values = value.values() if isinstance(value, dict) else [value]
            handed_out |= {type(v) for v in values if type(v).__module__.startswith("smtplab")}
    exported = [getattr(smtplab, name) for name in smtplab.__all__]
    assert sorted(c.__name__ for c in handed_out if c not in exported) == []
