"""The errors the lab raises on purpose, under one base class.

``except SmtplabError`` catches every refusal the lab explains in words (a bad address,
a route that cannot be found, a port in use, a message too damaged to read), and lets a
genuine bug through as its own exception. Each subclass also derives from the built-in
exception a caller would expect (``ValueError`` for bad input, ``OSError`` for a port),
so code written against those keeps working.
"""


class SmtplabError(Exception):
    """Something the lab refuses or cannot do, with a message a reader can act on."""
