"""Data: text files, corpora, token blocks (MNTP) and contrastive texts (SimCSE)."""
