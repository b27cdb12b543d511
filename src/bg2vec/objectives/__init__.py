"""Objectives, pure parts with no Trainer: masking collators, MNTP (the i-1 shift), InfoNCE/SimCSE."""
