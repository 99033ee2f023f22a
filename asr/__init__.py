"""Speech recognition core of speechprune: data, features, tokenizer, encoders, training and inference."""
