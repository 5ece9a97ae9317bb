"""Test helpers for triofd's users."""
