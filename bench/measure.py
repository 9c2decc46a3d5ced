"""Small measuring tools shared by the benchmarks: memory of processes, the machine.

* :func:`peak_kib` reads a process's peak resident set size (``VmHWM``), which
  the kernel keeps for the whole life of the process: read it just before the
  process ends.
* :class:`PeakSampler` samples the *total* memory of a changing set of
  processes (Postfix's daemons come and go) every ``interval`` seconds in a
  thread, and keeps the highest total seen: resident set size, or with
  ``pss=True`` the proportional set size, which counts a page shared by ten
  daemons once rather than ten times. Samples can miss a short spike; for a
  process of our own, ``VmHWM`` is exact.
* :func:`machine` describes the machine for ``results.md``.
"""

from __future__ import annotations

import os
import platform
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_kib(pid: int) -> int | None:
    """Resident set size now, in KiB (None if the process is gone)."""
    return _status_kib(pid, "VmRSS")


def pss_kib(pid: int) -> int | None:
    """Proportional set size now, in KiB: shared pages divided among their sharers, so
    that a sum over processes (Postfix's daemons) counts each page once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return rss_kib(pid)
    return rss_kib(pid)


def peak_kib(pid: int) -> int | None:
    """Peak resident set size over the process's life so far, in KiB."""
    return _status_kib(pid, "VmHWM")


class PeakSampler:
    """The highest total RSS of ``pids()`` seen while the sampler runs (a context manager)."""

    def __init__(
        self, pids: Callable[[], Iterable[int]], interval: float = 0.02, *, pss: bool = False
    ):
        self.pids = pids
        self.interval = interval
        self.measure = pss_kib if pss else rss_kib
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench memory sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        total = sum(self.measure(pid) or 0 for pid in self.pids())
        self.samples += 1
        self.peak_kib = max(self.peak_kib, total)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


def _command_output(*command: str) -> str:
    if shutil.which(command[0]) is None and not os.path.exists(command[0]):
        return ""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (result.stdout or result.stderr).strip()


def machine() -> dict[str, str]:
    """CPU model, cores, memory, OS, and the versions the numbers depend on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip('"')
                os_name = f"{pretty}, kernel {platform.release()}"
    except OSError:
        pass
    postfix = _command_output("/usr/sbin/postconf", "-d", "-h", "mail_version")
    import aiosmtpd

    return {
        "cpu": cpu or platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "memory": memory,
        "os": os_name,
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
        "aiosmtpd": aiosmtpd.__version__,
        "postfix": postfix or "not installed",
        "node": _command_output("node", "--version") or "not installed",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
