"""Gravity registry service."""
