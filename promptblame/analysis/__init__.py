"""Pure statistics (no I/O) and the scheduled jobs that feed them from the store."""
