"""The chapters' pictures, drawn from a real lab: what they say, what they light, how they scale."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from smtplab.widgets import journey_svg, sequence_svg


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
