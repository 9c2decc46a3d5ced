"""The drawing kit's pure parts: cutting and wrapping text, escaping, tones, arrowheads, boxes.

Tables of inputs and the decisions expected of them, as h11's test_state.py does; the
pictures built from these are tested in test_pictures.py.
"""

from __future__ import annotations

import pytest

from smtplab.view.pictures.kit import (
    CHAR_W,
    SKETCH_CHAR_W,
    TONES,
    Box,
    arrowhead,
    code_tone,
    escape,
    fit,
    line_arrow,
    sketch_text,
    wrap,
)


@pytest.mark.parametrize(
    ("text", "chars", "expected"),
    [
        ("mx1.example.org", 20, "mx1.example.org"),  # fits: as it is
        ("mx1.example.org", 15, "mx1.example.org"),  # exactly fits
        ("mx1.example.org", 10, "mx1.examp…"),  # cut: nine letters and the "…"
        ("abc", 1, "…"),
        ("", 5, ""),
    ],
)
def test_fit_cuts_to_the_characters_that_fit_and_ends_in_an_ellipsis(text, chars, expected):
    assert fit(text, chars * CHAR_W + 0.5) == expected
    assert fit(text, chars * SKETCH_CHAR_W + 0.5, SKETCH_CHAR_W) == expected


@pytest.mark.parametrize(
    ("text", "chars", "most", "expected"),
    [
        ("one two three", 20, 6, ["one two three"]),
        ("one two three", 7, 6, ["one two", "three"]),
        ("one\ntwo", 20, 6, ["one", "two"]),  # a newline always breaks
        ("abcdefghij", 4, 6, ["abcd", "efgh", "ij"]),  # a word longer than a line
        ("ab abcdefghij", 4, 6, ["ab", "abcd", "efgh", "ij"]),  # ... starts its own line
        ("a b c d", 1, 3, ["a", "b", "…"]),  # at most 3 lines, the last cut
        ("", 5, 6, [""]),
    ],
)
def test_wrap_breaks_at_spaces_and_newlines_and_keeps_to_most_lines(text, chars, most, expected):
    assert wrap(text, chars * CHAR_W + 0.5, most) == expected


@pytest.mark.parametrize(
    ("code", "tone"),
    [(250, "server"), (354, "more"), (451, "retry"), (554, "error"), (None, "info"), (0, "info")],
)
def test_a_reply_code_takes_the_tone_of_its_class(code, tone):
    assert code_tone(code) == tone
    assert tone in TONES


def test_text_is_escaped_for_attributes_and_elements():
    assert escape('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert escape(250) == "250"


@pytest.mark.parametrize(
    ("dx", "dy", "size", "points"),
    [
        (1, 0, 9, "100.0,50.0 91.0,54.0 91.0,46.0"),  # pointing right
        (0, 1, 8, "100.0,50.0 96.0,42.0 104.0,42.0"),  # pointing down, a sketch's size
        (0, 0, 9, "100.0,50.0 100.0,50.0 100.0,50.0"),  # no direction: a point, not an error
    ],
)
def test_an_arrowhead_is_a_polygon_with_its_tip_at_the_point(dx, dy, size, points):
    assert arrowhead(100, 50, dx, dy, "#123456", size) == (
        f'<polygon points="{points}" fill="#123456"/>'
    )


@pytest.mark.parametrize(
    ("other", "leaves_at"),
    [
        (Box(200, 0, 50, 40), (100, 20)),  # to the right: the right side's middle
        (Box(-100, 0, 50, 40), (0, 20)),  # to the left: the left side's middle
        (Box(0, 100, 100, 40), (50, 40)),  # below: the bottom's middle
        (Box(0, -100, 100, 40), (50, 0)),  # above: the top's middle
        (Box(60, 100, 20, 40), (70, 40)),  # below and narrower: straight down to it
    ],
)
def test_a_line_leaves_a_box_from_the_side_facing_the_other(other, leaves_at):
    assert Box(0, 0, 100, 40).side_toward(other) == leaves_at


def test_a_sketchs_text_and_arrows_are_plain_svg():
    assert sketch_text(1, 2, "a<b", 100, font_weight="bold", text_anchor="middle") == (
        '<text x="1" y="2" font-weight="bold" text-anchor="middle">a&lt;b</text>'
    )
    drawn = line_arrow(0, 0, 10, 0, "#000", dashed=True)
    assert drawn.startswith('<line x1="0" y1="0" x2="10" y2="0" stroke="#000" stroke-width="1.5"')
    assert 'stroke-dasharray="5 3"' in drawn and drawn.endswith(
        '<polygon points="10.0,0.0 2.0,4.0 2.0,-4.0" fill="#000"/>'
    )
