"""Shared fixtures: a tokenizer trained here (no network) and tiny random decoders of each architecture.

Each model is built once per session from a config (hidden 64, 2 layers) and saved as a normal HF folder,
so tests exercise the same loading path users do; a test that needs a model object gets a fresh load.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Hub ids in the tests are served from a Hugging Face cache of the session's own (set before any HF import).
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="bg2vec-hub-cache-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import
# Fixed torch threads in every test and CLI child, so runs compare bit for bit whatever else the machine does
# (cpu_threads "auto" steps aside when it is set; tests/test_cpu_threads.py unsets it).
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers, decoders
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from bg2vec.models.architectures import ARCHITECTURES as FAMILIES

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]  # the repository root, for tests in any subfolder
# Test modules share helpers by module name (`from test_evaluate import write_task`) across the subfolders.
sys.path[:0] = [str(folder) for folder in sorted(Path(__file__).parent.iterdir()) if folder.is_dir() and folder.name[0] not in "._"]

CORPUS = [
    "София е столицата на България и най-големият град в страната.",
    "Пловдив е един от най-старите градове в Европа.",
    "Черно море е на изток, а Стара планина минава през средата на страната.",
    "Езикът е български и се пише на кирилица.",
    "The quick brown fox jumps over the lazy dog.",
    "Masked next token prediction trains a decoder to look both ways.",
    "Bidirectional attention lets every token see the whole sentence.",
    "A sentence encoder maps text to a vector.",
    "snake_case names use the _ character between words.",
]

# The grid is the table of families bg2vec supports: a row added there is tested here without a second list.
ARCHITECTURES = list(FAMILIES)
# (family, attention implementation) pairs transformers runs: the grid for attention-level tests.
ATTENTION_GRID = [(name, impl) for name, family in FAMILIES.items() for impl in family.attn_implementations]
# Config fields a family needs beyond the common ones (small windows so sliding layers are exercised).
FAMILY_CONFIG = {
    "mistral": dict(sliding_window=None),
    "gemma": dict(head_dim=16),
    "gemma2": dict(head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"]),
    "gemma3_text": dict(head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"]),
    "qwen3": dict(head_dim=16),
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on CORPUS; adds <s> before each text like Llama/Mistral."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer.add_tokens(["_"])
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_config(model_type: str, vocab_size: int, bos: int, eos: int):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bos,
        eos_token_id=eos,
        tie_word_embeddings=False,
    )
    return AutoConfig.for_model(model_type, **common, **FAMILY_CONFIG.get(model_type, {}))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """model_type → folder with config.json, weights and tokenizer of a tiny random decoder."""
    tokenizer = build_tokenizer()
    folders = {}
    for model_type in ARCHITECTURES:
        torch.manual_seed(0)
        config = tiny_config(model_type, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
        model = AutoModelForCausalLM.from_config(config)
        folder = tmp_path_factory.mktemp(model_type)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[model_type] = folder
    return folders


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory) -> dict[str, Path]:
    """Small train/validation text files, one document per line."""
    folder = tmp_path_factory.mktemp("corpus")
    train = folder / "train.txt"
    validation = folder / "validation.txt"
    train.write_text("\n".join(CORPUS * 6) + "\n", encoding="utf-8")
    validation.write_text("\n".join(reversed(CORPUS * 2)) + "\n", encoding="utf-8")
    return {"train": train, "validation": validation}
