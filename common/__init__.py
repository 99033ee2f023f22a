"""Basics every layer shares: user-facing errors, atomic files, unit constants, the timing harness.

Imports nothing of speechprune's own packages, so that ``decoding`` (the bottom layer) can use it too.
"""
