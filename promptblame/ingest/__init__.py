"""Ingest: wire contracts, body decoding, arrow rows, and the group-commit writer."""
