"""smtplab 0.1's module paths still import, for one release, each with a DeprecationWarning
that says where its names went (smtplab/moved.py); the package itself warns nothing."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from smtplab import moved
from smtplab.protocol.rules import parse_path
from smtplab.record.recordings import Recordings
from smtplab.smtp.client import LabSMTP
from smtplab.smtp.faults import AT_END_OF_DATA
from smtplab.view.widgets.compose import ComposeView


def fresh(name: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """Import ``name`` as if for the first time in this process (so that it warns)."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        monkeypatch.delitem(sys.modules, loaded)
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(moved.MOVED))
def test_an_old_path_imports_and_says_where_its_names_went(old, monkeypatch):
    with pytest.warns(DeprecationWarning, match=rf"^{old} moved in smtplab 0\.2: import from "):
        fresh(old, monkeypatch)
    for home in moved.MOVED[old]:
        importlib.import_module(home)  # every new home exists


@pytest.mark.parametrize(
    ("old", "name", "now"),
    [
        ("smtplab.tlsca", "LabSMTP", LabSMTP),  # the path the README of 0.1 gave
        ("smtplab.journal", "WireJournal", Recordings),  # renamed on the way
        ("smtplab.widgets.compose", "ComposeView", ComposeView),
        ("smtplab.faults", "END_OF_DATA", AT_END_OF_DATA),  # one of three, each named now
    ],
)
def test_an_old_name_is_the_new_object(old, name, now, monkeypatch):
    with pytest.warns(DeprecationWarning):
        module = fresh(old, monkeypatch)
    assert getattr(module, name) is now


def test_a_name_the_new_homes_lack_is_an_attribute_error(monkeypatch):
    with pytest.warns(DeprecationWarning):
        module = fresh("smtplab.tlsca", monkeypatch)
    with pytest.raises(AttributeError, match="LabSMTP_SSL"):
        module.LabSMTP_SSL  # noqa: B018 - deleted in 0.2: nothing real used it


def test_protocol_the_old_module_is_now_a_package_that_forwards_its_rules(monkeypatch):
    protocol = importlib.import_module("smtplab.protocol")
    monkeypatch.delitem(vars(protocol), "parse_path", raising=False)
    with pytest.warns(DeprecationWarning, match="smtplab.protocol.rules") as caught:
        from smtplab.protocol import parse_path as old
    assert old is parse_path and len(caught) == 1
    monkeypatch.delitem(vars(protocol), "END_OF_DATA", raising=False)
    with pytest.warns(DeprecationWarning, match="import DATA_TERMINATOR from"):
        from smtplab.protocol import END_OF_DATA
    assert END_OF_DATA == b"\r\n.\r\n"
    with pytest.raises(ImportError):
        from smtplab.protocol import no_such_rule  # noqa: F401


def test_the_package_and_its_real_modules_warn_nothing():
    code = "import smtplab, smtplab.cli, smtplab.view.widgets, smtplab.protocol.rules"
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True)


def test_the_module_exported_whole_imports_by_its_public_name_without_a_warning():
    """``smtplab.pipelining`` is public (chapter 10): ``import smtplab.pipelining`` gives the
    same module as ``from smtplab import pipelining``, silently, and leaves the name alone."""
    code = (
        "import smtplab.pipelining as p, smtplab\n"
        "from smtplab import pipelining\n"
        "assert p is pipelining is smtplab.pipelining, p\n"
        "assert p.__name__ == 'smtplab.smtp.pipelining', p.__name__\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_no_old_path_is_a_name_the_package_exports():
    """Importing an old path sets it as an attribute of its parent: it must never be one of
    the package's own names, or the old import would replace the real one."""
    import smtplab

    children = {old.split(".")[1] for old in moved.MOVED}
    assert sorted(children & set(smtplab.__all__)) == []
