"""Names: the lab's authoritative DNS server and RFC 5321 §5.1 route selection."""
