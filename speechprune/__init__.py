"""The application layer of speechprune: the command line, the pruning study, the latency search, reports.

Layers run one way: ``common`` (errors, files, units, timing) <- ``decoding`` <- ``asr`` <- ``pruning`` <-
``speechprune``. Nothing below imports this package.
"""
