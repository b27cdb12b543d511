"""Evaluating bg2vec encoders: `mteb_model` wraps one for MTEB 2.x."""
