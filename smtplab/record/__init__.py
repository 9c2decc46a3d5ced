"""What the lab remembers.

The wire log of each connection, the registry of recordings, transcripts and journeys.
"""
