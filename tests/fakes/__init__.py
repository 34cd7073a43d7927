"""Fake platform servers on loopback for end-to-end adapter tests."""
