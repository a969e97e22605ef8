"""Reliability: hangs, crashes, bad input, hostile files and endpoints (issue 12)."""
