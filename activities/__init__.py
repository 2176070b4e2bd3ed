"""Temporal activities: thin adapters that do the I/O, through a fleet backend."""
