"""Decoder-aware latency search: which layer widths fit a latency budget on the target, measured on the fly.

``config`` (what the user asks), ``targets`` (where latency is measured), ``finetune`` (brief recovery of
each candidate), ``scale_out`` (where the fine-tunes run: here, or as Ray tasks), ``state`` (the tree on
disk, for resuming), ``tree`` (the search loop), ``finals`` (final fine-tune and the separate check run),
``plots``, and ``job`` (all of it from a config file).
"""
