"""The decoder-aware pruning study: which models (``models``), which decoder settings (``tuning``), the
measurement (``run``), typed rows (``rows``), plots (``plots``) and the Markdown report (``report``)."""
