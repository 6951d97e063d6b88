"""Frozen foundation-model encoders: vision (backbones, pixel decoders) and language (token features)."""
