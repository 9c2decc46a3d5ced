"""Hypothesis strategies for the property tests of the protocol rules and the wire parser."""

from __future__ import annotations

from hypothesis import strategies as st

#: Text of one line: no CR, LF or NUL, no lone surrogate.
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), max_size=40
)
#: The bytes of one line, without its line end: anything but CR and LF.
LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
