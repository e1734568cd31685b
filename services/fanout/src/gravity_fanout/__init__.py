"""Gravity fanout service."""
