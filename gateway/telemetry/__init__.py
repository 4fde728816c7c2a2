"""What the gateway tells operators: metrics, the migration report, client labels."""
