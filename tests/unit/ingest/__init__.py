"""Unit tests of ingest_service."""
