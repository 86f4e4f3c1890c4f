"""Helpers of scripts/bench.py (the streamlog benchmark suite). Not part of the library."""
