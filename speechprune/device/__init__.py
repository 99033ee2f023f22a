"""On the device: the latency agent a search or a study measures against (``speechprune device serve``)."""
