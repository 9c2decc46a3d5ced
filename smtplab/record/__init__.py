"""What the lab remembers.

The wire log of each connection, the registry of recordings, SMTP and POP3/IMAP
transcripts, and journeys.
"""
