"""The benchmarks still run: each script end to end with tiny counts, and the report.

``make bench`` is not part of ``make test`` (it takes minutes and its numbers
depend on the machine), so without these checks a change to the lab could
quietly break it. Parts that need Postfix (``smtp-sink``, a private instance as
root) are skipped where it is missing. No assertion here is about speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

pytestmark = pytest.mark.slow


def _run(script: str, *arguments: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{script}.json"
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(out.read_text())


def _module(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_receive_measures_plain_and_recording_receivers(tmp_path: Path) -> None:
    data = _run(
        "receive.py",
        *("--rounds", "1", "--messages", "20", "--sessions", "2"),
        *("--receivers", "plain aiosmtpd,lab recording", "--profiles", "per-connection"),
        tmp_path=tmp_path,
    )
    rows = {row["receiver"]: row for row in data["profiles"]["per-connection"]}
    assert set(rows) == {"plain aiosmtpd", "lab recording"}
    assert all(row["rate"] > 0 and row["peak_mib"] > 0 for row in rows.values())
    assert rows["plain aiosmtpd"]["ratio_plain"] == 1.0
    assert data["machine"]["python"] == sys.version.split()[0]


def test_bulk_delivers_everything_and_reports_memory(tmp_path: Path) -> None:
    data = _run("bulk.py", "--messages", "40", "--warmup", "10", tmp_path=tmp_path)
    assert data["delivered"] == data["expected"] == 50
    assert data["errors"] == 0
    assert data["peak_mib"] >= data["before_mib"] > 0
    assert data["journal_connections"] > 0


@pytest.mark.skipif(
    shutil.which("smtp-sink", path="/usr/sbin:/usr/bin") is None or os.geteuid() != 0,
    reason="needs Postfix's smtp-sink, run as root",
)
def test_relay_loses_nothing_through_the_lab(tmp_path: Path) -> None:
    data = _run(
        "relay.py",
        *("--relays", "lab,direct", "--rounds", "1", "--messages", "40", "--sessions", "2"),
        tmp_path=tmp_path,
    )
    rows = {row["relay"]: row for row in data["rows"]}
    assert rows["lab"]["lost"] == rows["lab"]["duplicates"] == 0
    assert rows["lab"]["drained"]
    assert rows["lab"]["peak_mib"] > 0


def test_the_report_says_which_targets_were_met() -> None:
    run = _module("run")
    receive = {
        "client": "python_client",
        "messages": 10,
        "maildev_messages": 4,
        "sessions": 2,
        "rounds": 1,
        "profiles": {
            "per-connection": [
                {"receiver": "plain aiosmtpd", "rate": 100.0, "ratio_plain": 1.0},
                {"receiver": "lab recording", "rate": 95.0, "ratio_plain": 0.95},
            ]
        },
        "greeting_ms": {"plain aiosmtpd": 0.5},
    }
    relay = {"skipped": "postfix is not installed"}
    bulk = {
        "messages": 10,
        "sessions": 2,
        "size": 300,
        "rate": 50.0,
        "accept_rate": 60.0,
        "seconds": 0.2,
        "delivered": 10,
        "expected": 10,
        "before_mib": 50.0,
        "after_mib": 52.0,
        "peak_mib": 53.0,
        "growth_mib": 2.0,
        "journal_connections": 4,
        "journal_mib": 0.1,
    }
    targets = {target: met for target, _, met in run.targets(receive, relay, bulk)}
    assert targets == {
        "receive: lab recording ≥ 0.9 x plain aiosmtpd (per connection)": "yes",
        "memory growth ≤ 150 MB after 10 messages": "yes",
    }
    text = run.markdown(receive, relay, bulk, "not run: npm missing", run.datetime.datetime.now())
    assert "Skipped: postfix is not installed" in text
    assert "| lab recording | 95 | 0.95 |" in text
