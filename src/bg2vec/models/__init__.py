"""Models: references (Hub id, folder, .gguf, pypi:), the one loader of decoders and adapters, the bidirectional switch, per-architecture facts."""
