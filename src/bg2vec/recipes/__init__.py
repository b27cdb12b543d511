"""Recipes: prepare, mntp, simcse, each reading top to bottom; the Trainer glue and reporting."""
