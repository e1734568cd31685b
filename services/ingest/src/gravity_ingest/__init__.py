"""Gravity ingest service."""
