"""TLS for the lab.

A private certificate authority, connections that reach a lab host name on 127.0.0.1 and
check its certificate, and an eavesdropper that shows what TLS hides.
"""
