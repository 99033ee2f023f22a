"""Acoustic encoders."""
