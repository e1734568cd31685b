"""Gravity realtime service."""
