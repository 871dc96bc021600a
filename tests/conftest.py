"""Shared test configuration; service helpers live in ``tests/_services.py``."""
