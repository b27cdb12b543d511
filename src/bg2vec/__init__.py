"""bg2vec: turn a decoder-only LLM into a text encoder (LLM2Vec: bidirectional attention, Bi-MNTP, SimCSE)."""

__version__ = "0.1.0"

from .models.bidirectional import enable_bidirectional, is_bidirectional
from .config import MNTPConfig, SimCSEConfig, load_config
from .corpus.reading import Embeddings, read_embeddings
from .encoding.encoder import Bg2Vec
from .errors import Bg2VecError, ConfigError, DataError
from .objectives.masking import MNTPCollator, prepare_tokenizer
from .objectives.mntp import MNTPModel, masked_token_accuracy, mntp_logits_at_labels, mntp_loss
from .objectives.simcse import info_nce_loss
from .recipes.mntp import run_mntp
from .recipes.simcse import run_simcse

__all__ = [
    "__version__",
    "Bg2Vec",
    "Bg2VecError",
    "ConfigError",
    "DataError",
    "Embeddings",
    "MNTPCollator",
    "MNTPConfig",
    "MNTPModel",
    "SimCSEConfig",
    "enable_bidirectional",
    "info_nce_loss",
    "is_bidirectional",
    "load_config",
    "masked_token_accuracy",
    "mntp_logits_at_labels",
    "mntp_loss",
    "prepare_tokenizer",
    "read_embeddings",
    "run_mntp",
    "run_simcse",
]
