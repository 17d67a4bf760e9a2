"""The link to the center: durable queues drained to destinations, storage
commitment, and recall of purged studies."""
