"""Frozen foundation-model encoders: vision (backbones + pixel decoders) and language (tokens)."""
