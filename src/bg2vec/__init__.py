"""bg2vec: turn a decoder-only LLM into a text encoder (LLM2Vec: bidirectional attention, Bi-MNTP, SimCSE).

The public names load on first use (PEP 562), so `import bg2vec` and `bg2vec.config` stay light: no torch
Trainer, datasets or peft until a name that needs them is touched.

    >>> from bg2vec import Bg2Vec
    >>> encoder = Bg2Vec.from_pretrained("path/to/bg2vec-output")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name → the module that defines it
_WHERE = {
    "Bg2Vec": ".encoding.encoder",
    "Bg2VecError": ".errors",
    "ConfigError": ".errors",
    "DataError": ".errors",
    "Embeddings": ".corpus.reading",
    "MNTPCollator": ".objectives.masking",
    "MNTPConfig": ".config",
    "MNTPModel": ".objectives.mntp",
    "SimCSEConfig": ".config",
    "enable_bidirectional": ".models.bidirectional",
    "info_nce_loss": ".objectives.contrastive",
    "is_bidirectional": ".models.bidirectional",
    "load_config": ".config",
    "masked_token_accuracy": ".objectives.mntp",
    "mntp_logits_at_labels": ".objectives.mntp",
    "mntp_loss": ".objectives.mntp",
    "prepare_tokenizer": ".objectives.masking",
    "read_embeddings": ".corpus.reading",
    "run_mntp": ".recipes.mntp",
    "run_simcse": ".recipes.simcse",
}

__all__ = ["__version__", *sorted(_WHERE, key=str.lower)]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on demand
    from .config import MNTPConfig, SimCSEConfig, load_config
    from .corpus.reading import Embeddings, read_embeddings
    from .encoding.encoder import Bg2Vec
    from .errors import Bg2VecError, ConfigError, DataError
    from .models.bidirectional import enable_bidirectional, is_bidirectional
    from .objectives.masking import MNTPCollator, prepare_tokenizer
    from .objectives.mntp import MNTPModel, masked_token_accuracy, mntp_logits_at_labels, mntp_loss
    from .objectives.contrastive import info_nce_loss
    from .recipes.mntp import run_mntp
    from .recipes.simcse import run_simcse


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'bg2vec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value  # the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
