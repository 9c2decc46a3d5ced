"""The models that follow one message: its journey's steps and hop transcripts, and the
hop whose sequence diagram the Path tab shows.

Theory of operation
-------------------
A :class:`JourneyModel` shows one :class:`~smtplab.record.journey.Journey` (a
SendResult's, or one given). The lab's queue workers add steps from their own
threads and tell listeners through ``journey.on_step``; the model then assigns
``steps``, ``hops`` and ``done``, under a lock, and only for the journey it still
shows. A hop's recording is live (its step is added when the connection opens),
so each open connection gets a watcher thread that reads the hops again when the
connection closes: :meth:`JourneyModel.wait` returns once the journey is done and
every hop was read after its close.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from traitlets import Any as AnyTrait
from traitlets import Bool, HasTraits, Int, List, TraitType

from smtplab.record.journey import Journey, Step
from smtplab.record.transcript import Transcript

if TYPE_CHECKING:
    from smtplab.lab.sendresult import SendResult
    from smtplab.record.wirelog import WireLog

HOP_WATCH_LIMIT = 600.0  # seconds a watcher waits for a connection to close


def journey_of(item: SendResult | Journey | None) -> Journey | None:
    """The Journey of a SendResult; a Journey (or None) as it is."""
    if item is None or isinstance(item, Journey):
        return item
    return item.journey


class JourneyModel(HasTraits):
    """The message being watched: its journey's steps and hop transcripts, kept current.

    ``show(x)`` accepts a SendResult, a Journey or None. While
    the journey grows (``journey.on_step``, on the lab's threads), ``steps``,
    ``hops`` and ``done`` follow it. A hop's recording is live (its step is
    added when the connection opens), so each open connection also has a
    watcher thread that refreshes ``hops`` when the connection closes.
    """

    result: TraitType[SendResult | None, SendResult | None] = AnyTrait(
        None, help="the SendResult shown, if any"
    )
    journey: TraitType[Journey | None, Journey | None] = AnyTrait(
        None, help="the Journey shown, if any"
    )
    steps: List[Step] = List(help="Step objects, in order")
    hops: List[Transcript] = List(help="the Transcript of every connection, in order")
    done = Bool(False)

    def __init__(
        self,
        item: SendResult | Journey | None = None,
        *,
        roles: dict[str, str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.roles = dict(roles or {})  # host -> role, for the journey drawing
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._watched: dict[int, WireLog] = {}  # id -> wire, for connections being watched
        self._complete = True  # every hop shown was read after its connection closed
        self.show(item)

    def show(self, item: SendResult | Journey | None) -> None:
        journey = journey_of(item)
        with self._lock:
            self.result = None if isinstance(item, Journey) else item
            self.journey = journey
            if journey is not None:
                journey.on_step(lambda _step: self._follow(journey))
            self._follow(journey)

    def _follow(self, journey: Journey | None) -> None:
        with self._lock:
            if journey is not self.journey:
                return  # a step of a message we no longer show
            steps = journey.steps if journey is not None else []
            for step in steps:
                self._watch(journey, step.wire)
            # Closed before they are read: then the transcripts read are complete.
            self._complete = all(s.wire.closed.is_set() for s in steps if s.wire is not None)
            self.hops = [s.wire.transcript() for s in steps if s.wire is not None]
            self.steps = steps
            self.done = journey is not None and journey.done
            self._changed.notify_all()

    def _watch(self, journey: Journey | None, wire: WireLog | None) -> None:
        if wire is None or wire.closed.is_set() or id(wire) in self._watched:
            return
        self._watched[id(wire)] = wire

        def watch() -> None:
            wire.closed.wait(HOP_WATCH_LIMIT)
            with self._lock:
                self._watched.pop(id(wire), None)
            self._follow(journey)

        threading.Thread(target=watch, name="smtplab-hop-watch", daemon=True).start()

    def _settled(self) -> bool:
        return self.done and self._complete

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the journey is done and its connections closed and shown.

        TimeoutError past ``timeout``.
        """
        with self._changed:
            if not self._changed.wait_for(self._settled, timeout):
                raise TimeoutError(f"journey not done after {timeout} s: {len(self.steps)} steps")


class PathModel(HasTraits):
    """The path drawing's state: the journey it follows and which hop's sequence is shown."""

    hop = Int(-1, help="index into journey.hops; -1 follows the newest hop")

    def __init__(self, journey: JourneyModel, **kwargs: Any):
        super().__init__(**kwargs)
        self.journey = journey

    @property
    def transcript(self) -> Transcript | None:
        hops = self.journey.hops
        if not hops:
            return None
        return hops[self.hop] if 0 <= self.hop < len(hops) else hops[-1]
