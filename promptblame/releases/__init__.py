"""Prompt releases: labels that point to prompt versions, their history, resolve and rollback."""
