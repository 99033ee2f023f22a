"""Corpora, manifests, datasets and the Lightning data module."""
