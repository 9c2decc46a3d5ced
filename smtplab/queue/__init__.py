"""Store and forward: the durable spool and the delivery worker that relays, retries and bounces."""
