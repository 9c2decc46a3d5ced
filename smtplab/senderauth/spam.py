"""A small, transparent spam score: points for each rule a message breaks.

Theory of operation
-------------------
Real filters (SpamAssassin, Rspamd) add up points from hundreds of rules and
compare the sum with thresholds. This one has a handful of rules a reader can
read in one screen, and the same shape:

* failed authentication: SPF fail or softfail, a DKIM signature that does not
  verify, a DMARC fail (the results come from :mod:`smtplab.senderauth.checks`);
* content: words and phrases that spam uses, a subject in capital letters,
  a row of exclamation marks.

The total decides what the receiving server does (:meth:`SpamFilter.score`):

* below ``quarantine_at``: **accept** into the inbox;
* from ``quarantine_at``: **quarantine**: answer 250 and file the message in
  the recipient's Junk folder, marked with ``X-Spam-Flag: YES``. The sender
  believes it was delivered, and in a sense it was;
* from ``reject_at``: **reject** with ``550 5.7.1`` at the end of DATA. Nothing
  is stored; the sending server must tell its sender (a bounce), so a real
  person who was wrongly refused finds out.

Each lab has one filter; change its thresholds, points or word list freely.
The module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["accept", "quarantine", "reject"]

#: Phrases that spam uses, with their points. Matched as whole words, in any case.
SPAMMY_PHRASES: dict[str, float] = {
    "act now": 2.0,
    "bitcoin": 1.5,
    "click here": 1.5,
    "congratulations": 1.0,
    "free money": 3.0,
    "guaranteed": 1.5,
    "lottery": 2.5,
    "prize": 2.0,
    "urgent": 1.0,
    "winner": 2.0,
    "wire transfer": 2.5,
}

#: Points for authentication results, by "method=result" (RFC 8601 result names). On their
#: own they stay below the quarantine threshold: what to do about a failed check is the
#: domain owner's DMARC policy; the filter only weighs it as evidence.
AUTH_POINTS: dict[str, float] = {
    "spf=fail": 2.0,
    "spf=softfail": 1.0,
    "dkim=fail": 1.5,
    "dmarc=fail": 2.5,
}


@dataclass(frozen=True)
class Hit:
    """One rule the message broke: its name, its points and why."""

    rule: str
    points: float
    detail: str

    def __str__(self) -> str:
        return f"{self.points:4.1f}  {self.rule:<20} {self.detail}"


@dataclass(frozen=True)
class Score:
    """The total, the rules behind it, and what the thresholds make of it."""

    points: float
    hits: tuple[Hit, ...]
    action: Action
    quarantine_at: float
    reject_at: float

    @property
    def is_spam(self) -> bool:
        return self.action != "accept"

    def status_header(self) -> str:
        """``X-Spam-Status:`` as SpamAssassin writes it: verdict, score, threshold, rules."""
        tests = ",".join(h.rule for h in self.hits) or "none"
        verdict = "Yes" if self.is_spam else "No"
        return (
            f"X-Spam-Status: {verdict}, score={self.points:.1f} "
            f"required={self.quarantine_at:.1f} tests={tests}\r\n"
        )

    def explain(self) -> str:
        """One line per rule, then the total and the action: the whole decision."""
        rows = [str(h) for h in self.hits] or ["       (no rule matched)"]
        limits = f"quarantine at {self.quarantine_at:g}, reject at {self.reject_at:g}"
        return "\n".join([*rows, f"{self.points:4.1f}  total → {self.action} ({limits})"])

    def __str__(self) -> str:
        return self.explain()


@dataclass
class SpamFilter:
    """The lab's content filter. Every field may be changed while the lab runs."""

    quarantine_at: float = 5.0
    reject_at: float = 10.0
    phrases: dict[str, float] = field(default_factory=lambda: dict(SPAMMY_PHRASES))
    auth_points: dict[str, float] = field(default_factory=lambda: dict(AUTH_POINTS))
    caps_subject_points: float = 2.0
    exclamation_points: float = 1.0

    def score(self, subject: str, body: str, auth: Mapping[str, str] | None = None) -> Score:
        """Score a message from its subject, its text and its authentication results.

        ``auth`` maps a method to its result, e.g. ``{"spf": "fail", "dkim": "none"}``.
        """
        hits: list[Hit] = []
        for method, result in (auth or {}).items():
            points = self.auth_points.get(f"{method}={result}")
            if points:
                hits.append(Hit(f"{method.upper()}_{result.upper()}", points, f"{method}={result}"))
        text = f"{subject}\n{body}"
        for phrase, points in self.phrases.items():
            if re.search(rf"\b{re.escape(phrase)}\b", text, re.IGNORECASE):
                rule = "SPAM_" + re.sub(r"\W+", "_", phrase.upper())
                hits.append(Hit(rule, points, f"says {phrase!r}"))
        letters = [c for c in subject if c.isalpha()]
        if len(letters) >= 4 and all(c.isupper() for c in letters):
            hits.append(Hit("SUBJ_ALL_CAPS", self.caps_subject_points, "subject in capitals"))
        if "!!!" in subject:
            hits.append(Hit("SUBJ_EXCLAMATIONS", self.exclamation_points, "subject shouts !!!"))
        total = round(sum(h.points for h in hits), 1)
        action: Action = (
            "reject"
            if total >= self.reject_at
            else "quarantine"
            if total >= self.quarantine_at
            else "accept"
        )
        return Score(total, tuple(hits), action, self.quarantine_at, self.reject_at)
