"""Gravity developer stack."""
