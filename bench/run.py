"""``make bench``: run every benchmark, print one summary table, write ``bench/results.md``.

Runs, each in a process of its own (their own output streams by as they go):

1. ``receive.py``: receiving servers side by side (plain aiosmtpd, the lab's
   recording server and MX, Postfix's smtp-sink, MailDev), two load profiles;
2. ``relay.py``: relaying end to end, the lab's queue against Postfix, both
   into the same smtp-sink;
3. ``bulk.py``: 10,000 messages through the whole lab, and the memory it keeps.

MailDev is installed from the npm registry into ``bench/maildev/`` on first use
(``npm install maildev``; git ignores the folder) when ``npm`` is there; if it
cannot be installed, the tables say so and go on without it. Parts that need
Postfix (``smtp-sink``, ``smtp-source``, a private Postfix instance as root) are
skipped, with the reason, where it is missing. ``--quick`` runs every part
with small counts, to check that the benchmarks work (minutes become seconds;
the numbers mean little).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import machine  # bench/ is not a package: found through sys.path

HERE = Path(__file__).resolve().parent

MAILDEV_DIR = HERE / "maildev"
MAILDEV_PACKAGE = "maildev@3"
RECEIVE_TARGET = 0.9  # lab recording server / plain aiosmtpd
RELAY_TARGET = 0.75  # lab queue / Postfix, end to end
MEMORY_TARGET_MB = 150  # RSS growth after 10,000 messages through the lab


def install_maildev() -> str:
    """Make sure bench/maildev holds MailDev; returns a note for the report."""
    script = MAILDEV_DIR / "node_modules" / "maildev" / "dist" / "bin" / "maildev.js"
    if script.exists():
        return "already installed"
    if shutil.which("npm") is None or shutil.which("node") is None:
        return "not run: node/npm are not installed"
    MAILDEV_DIR.mkdir(exist_ok=True)
    print(f"installing {MAILDEV_PACKAGE} into {MAILDEV_DIR} (npm) ...", flush=True)
    try:
        result = subprocess.run(
            [
                *("npm", "install", "--prefix", str(MAILDEV_DIR)),
                *("--no-audit", "--no-fund", "--loglevel=error", MAILDEV_PACKAGE),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"not run: npm install failed ({error})"
    if result.returncode != 0 or not script.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return f"not run: npm install failed: {' '.join(tail)}"
    return "installed now"


def run_part(name: str, script: str, arguments: list[str], folder: Path) -> dict[str, Any]:
    """Run one benchmark script; its JSON results, or {"skipped": reason}."""
    out = folder / f"{name}.json"
    command = [sys.executable, str(HERE / script), *arguments, "--json", str(out)]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
    sys.stderr.write(result.stderr)
    if out.exists():
        data = json.loads(out.read_text())
        data["exit_status"] = result.returncode
        return data
    reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    return {"skipped": reason}


def summary_rows(receive: dict, relay: dict, bulk: dict) -> list[tuple[str, str, str, str]]:
    """(what, msg/s, ratios, peak memory) for the printed summary and results.md."""
    rows = []
    for profile, receivers in receive.get("profiles", {}).items():
        for row in receivers:
            ratios = ", ".join(
                f"{label} {row[key]:.2f}"
                for key, label in (
                    ("ratio_plain", "plain"),
                    ("ratio_sink", "smtp-sink"),
                    ("ratio_maildev", "maildev"),
                )
                if key in row
            )
            peak = f"{row['peak_mib']:.0f} MiB" if "peak_mib" in row else "-"
            rows.append(
                (f"receive ({profile}): {row['receiver']}", f"{row['rate']:.0f}", ratios, peak)
            )
    for row in relay.get("rows", []):
        ratio = f"postfix {row['ratio_postfix']:.2f}" if "ratio_postfix" in row else "-"
        peak = f"{row['peak_mib']:.0f} MiB" if "peak_mib" in row else "-"
        rows.append((f"relay end to end: {row['relay']}", f"{row['rate']:.0f}", ratio, peak))
    if "rate" in bulk:
        rows.append(
            (
                f"bulk through the lab ({bulk['messages']} messages)",
                f"{bulk['rate']:.0f}",
                f"memory growth {bulk['growth_mib']:+.0f} MiB",
                f"{bulk['peak_mib']:.0f} MiB",
            )
        )
    return rows


def find(rows: list[dict], key: str, name: str) -> dict | None:
    return next((row for row in rows if row.get(key) == name), None)


def targets(receive: dict, relay: dict, bulk: dict) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each of the issue's targets."""
    found = []
    per_connection = receive.get("profiles", {}).get("per-connection", [])
    reused = receive.get("profiles", {}).get("reused", [])
    recording = find(per_connection, "receiver", "lab recording")
    if recording and "ratio_plain" in recording:
        ratio = recording["ratio_plain"]
        found.append(
            (
                f"receive: lab recording ≥ {RECEIVE_TARGET} x plain aiosmtpd (per connection)",
                f"{ratio:.2f} x",
                "yes" if ratio >= RECEIVE_TARGET else "no",
            )
        )
    recording_reused = find(reused, "receiver", "lab recording")
    if recording_reused and "ratio_plain" in recording_reused:
        ratio = recording_reused["ratio_plain"]
        found.append(
            (
                f"receive: lab recording ≥ {RECEIVE_TARGET} x plain aiosmtpd (reused connections)",
                f"{ratio:.2f} x",
                "yes" if ratio >= RECEIVE_TARGET else "no",
            )
        )
    for profile, rows in (("per connection", per_connection), ("reused connections", reused)):
        row = find(rows, "receiver", "lab recording")
        if row and "ratio_maildev" in row:
            ratio = row["ratio_maildev"]
            found.append(
                (
                    f"receive: lab recording at least as fast as MailDev ({profile})",
                    f"{ratio:.2f} x",
                    "yes" if ratio >= 1 else "no",
                )
            )
    lab = find(relay.get("rows", []), "relay", "lab")
    if lab and "ratio_postfix" in lab:
        ratio = lab["ratio_postfix"]
        found.append(
            (
                f"relay end to end: lab ≥ {RELAY_TARGET} x Postfix (same smtp-sink)",
                f"{ratio:.2f} x",
                "yes" if ratio >= RELAY_TARGET else "no",
            )
        )
    if "growth_mib" in bulk:
        growth_mb = bulk["growth_mib"] * 1.048576
        found.append(
            (
                f"memory growth ≤ {MEMORY_TARGET_MB} MB after {bulk['messages']} messages",
                f"{growth_mb:+.0f} MB",
                "yes" if growth_mb <= MEMORY_TARGET_MB else "no",
            )
        )
    return found


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(
    receive: dict, relay: dict, bulk: dict, maildev_note: str, began: datetime.datetime
) -> str:
    about = machine()
    if receive.get("maildev_version"):
        about["maildev"] = f"{receive['maildev_version']} (npm; {maildev_note})"
    else:
        about["maildev"] = maildev_note
    parts = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`bench/run.py`) on {began:%Y-%m-%d %H:%M} UTC. Numbers "
        "vary from run to run and with whatever else the machine is doing (the load "
        "average at the end of the run is in the table below); ratios between "
        "servers measured in alternating rounds vary less than the rates themselves.",
        "",
        "## Machine",
        "",
        table(("", ""), [(key, value) for key, value in about.items()]),
        "",
        "## Targets",
        "",
        table(("target", "measured", "met"), targets(receive, relay, bulk)),
        "",
        "## Summary",
        "",
        table(("what", "msg/s", "ratios", "peak memory"), summary_rows(receive, relay, bulk)),
        "",
    ]
    parts += ["## Receiving (`bench/receive.py`)", ""]
    if "skipped" in receive:
        parts += [f"Skipped: {receive['skipped']}", ""]
    else:
        parts += [
            f"Client `{receive['client']}`, {receive['sessions']} parallel sessions, 300-byte "
            f"messages, {receive['messages']} messages per round (MailDev, one message per "
            f"connection: {receive['maildev_messages']}), {receive['rounds']} rounds per "
            "profile, each receiver a fresh process per round. Medians; ratios are medians of "
            "per-round ratios; peak memory is the receiver process's VmHWM.",
            "",
        ]
        for profile, rows in receive["profiles"].items():
            parts += [
                f"**{profile}**",
                "",
                table(
                    ("receiver", "msg/s", "vs plain", "vs smtp-sink", "vs MailDev", "peak MiB"),
                    [
                        (
                            row["receiver"],
                            f"{row['rate']:.0f}",
                            *(
                                f"{row[key]:.2f}" if key in row else "-"
                                for key in ("ratio_plain", "ratio_sink", "ratio_maildev")
                            ),
                            f"{row['peak_mib']:.0f}" if "peak_mib" in row else "-",
                        )
                        for row in rows
                    ],
                ),
                "",
            ]
        greetings = ", ".join(
            f"{name} {ms:.1f} ms" for name, ms in receive.get("greeting_ms", {}).items()
        )
        parts += [
            f"Wait for the greeting of a new connection: {greetings}. MailDev's SMTP library "
            "pauses 100 ms before greeting, to catch clients that talk too soon, so with one "
            "message per connection it is bound by that pause, not by its processing.",
            "",
        ]
    parts += ["## Relaying end to end (`bench/relay.py`)", ""]
    if "skipped" in relay:
        parts += [f"Skipped: {relay['skipped']}", ""]
    else:
        parts += [
            f"client → relay (STARTTLS; the lab also AUTH) → smtp-sink; {relay['messages']} "
            f"messages of {relay['size']} B over {relay['sessions']} connections, "
            f"{relay['rounds']} rounds, alternating. Rate = client start → the sink counted all "
            "of them; cpu = the relay's CPU ms per message; peak memory = highest RSS sampled "
            "(lab: the bench process it runs in, in brackets that process before the load; "
            "Postfix: the proportional set sizes of its daemons added up, each shared page once).",
            "",
            table(
                ("relay", "msg/s", "vs Postfix", "accepted msg/s", "cpu ms/msg", "peak MiB"),
                [
                    (
                        row["relay"],
                        f"{row['rate']:.0f}",
                        f"{row['ratio_postfix']:.2f}" if "ratio_postfix" in row else "-",
                        f"{row['accept_rate']:.0f}",
                        f"{row['cpu_ms']:.2f}",
                        f"{row['peak_mib']:.0f} ({row['before_mib']:.0f})"
                        if "peak_mib" in row
                        else "-",
                    )
                    for row in relay["rows"]
                ],
            ),
            "",
        ]
        notes = relay.get("lab_per_message", {})
        if notes:
            cpu = ", ".join(
                f"{key[4:]} {value:.2f} ms"
                for key, value in sorted(notes.items(), key=lambda kv: -kv[1])
                if key.startswith("cpu:") and value >= 0.005
            )
            parts += [
                f"The lab per message: {notes.get('fsync', 0):.1f} fsync calls "
                f"({notes.get('fsync_s', 0):.2f} ms), {notes.get('dns', 0):.2f} DNS questions, "
                f"{notes.get('out_conn', 0):.2f} outgoing connections; CPU by thread: {cpu}.",
                "",
            ]
    parts += ["## Bulk through the lab, and memory (`bench/bulk.py`)", ""]
    if "skipped" in bulk:
        parts += [f"Skipped: {bulk['skipped']}", ""]
    else:
        parts += [
            f"{bulk['messages']} messages of {bulk['size']} B over {bulk['sessions']} "
            "connections: client → smtp.example.com (STARTTLS, AUTH, queue) → mx1.example.org "
            "→ Maildir, every connection recorded at both ends.",
            "",
            table(
                ("", ""),
                [
                    ("end to end", f"{bulk['rate']:.0f} msg/s ({bulk['seconds']:.1f} s)"),
                    ("accepted by the submission server", f"{bulk['accept_rate']:.0f} msg/s"),
                    ("delivered", f"{bulk['delivered']} of {bulk['expected']}"),
                    ("RSS after warm-up", f"{bulk['before_mib']:.0f} MiB"),
                    ("RSS after the run (after gc)", f"{bulk['after_mib']:.0f} MiB"),
                    ("growth", f"{bulk['growth_mib']:+.0f} MiB"),
                    ("peak RSS during the run", f"{bulk['peak_mib']:.0f} MiB"),
                    (
                        "journal at the end",
                        f"{bulk['journal_connections']} connections, "
                        f"{bulk['journal_mib']:.1f} MiB of recordings",
                    ),
                ],
            ),
            "",
            "What bounds the memory: the journal keeps the last 2,000 connections and the "
            "journey book the last 2,000 messages (each holding its hops' recordings); a "
            "recording keeps at most 1 MiB per direction and only counts the rest. So at "
            "worst (2,000 + 2,000) recordings x 2 MiB, about 8 GiB; a recording grows by "
            "about the size of the messages its connection carries, so real runs stay far "
            "below that (see the journal line above).",
            "",
        ]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: check that it works")
    parser.add_argument("--output", help="default: bench/results.md (--quick: bench/out/)")
    args = parser.parse_args()
    if args.output is None:
        args.output = str(HERE / "out" / "results-quick.md" if args.quick else HERE / "results.md")
        Path(args.output).parent.mkdir(exist_ok=True)
    began = datetime.datetime.now(datetime.UTC)
    maildev_note = install_maildev()
    if args.quick:
        receive_args = ["--rounds", "1", "--messages", "200", "--maildev-messages", "40"]
        relay_args = ["--rounds", "1", "--messages", "200"]
        bulk_args = ["--messages", "500", "--warmup", "50"]
    else:
        receive_args, relay_args, bulk_args = [], [], []
    with tempfile.TemporaryDirectory(prefix="smtplab-bench-") as folder:
        receive = run_part("receive", "receive.py", receive_args, Path(folder))
        relay = run_part("relay", "relay.py", relay_args, Path(folder))
        bulk = run_part("bulk", "bulk.py", bulk_args, Path(folder))
    rows = summary_rows(receive, relay, bulk)
    print("\n=== summary (details in the output above and in results.md)")
    width = max((len(row[0]) for row in rows), default=10)
    print(f"{'what':<{width}}  {'msg/s':>7}  {'peak':>8}  ratios")
    for what, rate, ratios, peak in rows:
        print(f"{what:<{width}}  {rate:>7}  {peak:>8}  {ratios}")
    print()
    for target, measured, met in targets(receive, relay, bulk):
        print(f"{'✔' if met == 'yes' else '✘'} {target}: {measured}")
    for name, part in (("receive", receive), ("relay", relay), ("bulk", bulk)):
        if "skipped" in part:
            print(f"- {name} skipped: {part['skipped']}")
    Path(args.output).write_text(markdown(receive, relay, bulk, maildev_note, began) + "\n")
    print(f"\nwrote {args.output}")
    failed = any(part.get("exit_status", 0) not in (0,) for part in (receive, relay, bulk))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
