"""The chapters' pictures, drawn from a real lab: what they say, what they light, how they scale."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from smtplab import Lab, RetryPolicy
from smtplab.widgets import journey_svg, sequence_svg

FAST = RetryPolicy(first_delay=0.2, max_attempts=3, max_age=10)


def svg_root(svg: str) -> ET.Element:
    """The root of an SVG drawing that scales: viewBox, width 100%, at most its own width."""
    root = ET.fromstring(svg)
    _, _, width, height = (int(n) for n in root.get("viewBox", "").split())
    assert root.get("width") == "100%" and "height" not in root.attrib
    assert root.get("style") == f"max-width:{width}px" and height > 0
    return root


# -- the drawings of the Path tab scale too ----------------------------------------------------
def test_journey_and_sequence_drawings_scale_to_their_container(lab):
    result = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello")
    journey = result.journey.wait()
    svg_root(journey_svg(journey))
    svg_root(sequence_svg(result.transcript))


# -- the time of a step ----------------------------------------------------------------------
def test_a_step_records_when_it_happened_on_the_clock_of_retry_at():
    with Lab(name="step-times", retry=FAST) as lab:
        lab.server("mx1.example.org").fail("RCPT", "451 4.7.1 Greylisted, try again later")
        before = time.time()
        journey = lab.send("alice@example.com", "bob@example.org", "Hi", "Hello").journey.wait()
        after = time.time()
    stamps = [step.at for step in journey.steps]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
    retry = next(step for step in journey.steps if step.kind == "retry")
    assert retry.retry_at is not None and retry.retry_at <= retry.at + FAST.first_delay
    assert "at=" not in repr(retry) and str(retry).startswith("retry ")
