"""TLS for the lab.

A private certificate authority and an eavesdropper that shows what TLS hides.
"""
