"""Decoder-aware structured pruning (structure surgery, criteria, regularizers, schedules, search)."""
