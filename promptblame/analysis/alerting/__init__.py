"""Alerts: rules and channels as config, message payloads, delivery with retries, the job."""
