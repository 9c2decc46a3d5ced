"""What this test process holds in memory, for the load and budget tests."""

from __future__ import annotations

import os
import resource


def rss_bytes() -> int:
    """This process's resident set size now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
