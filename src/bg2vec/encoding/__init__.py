"""Encoding: pooling, inputs (instructions), the Bg2Vec encoder, exports, file encoding."""
