"""Collecting new 2AFC and JND judgments for NIGHTS (in progress; see issue 7)."""
