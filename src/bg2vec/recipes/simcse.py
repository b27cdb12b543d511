"""The SimCSE recipe (`bg2vec simcse CONFIG.json`): set up, train, save. Reads top to bottom.

1. check the output folder, the batch (SimCSE needs negatives), the MNTP adapter against the base model, the
   texts and the pair file (every input error surfaces here, before anything is written);
2. load the base, merge the MNTP adapter, switch to bidirectional attention, set the SimCSE dropout, add a fresh
   LoRA, and train on two dropout views of every text with InfoNCE (see simcse.py);
3. save the adapter, tokenizer, bg2vec_config.json (base + MNTP adapter: the folder alone rebuilds the encoder),
   metrics, a plot, and the pair similarities before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PretrainedConfig, set_seed

from ..models.adapters import portable_adapter_config
from ..models.backbone import check_causal_lm, load_model, load_tokenizer, position_limit, read_model_config
from ..models.lora import add_lora, trainable_parameters_line
from ..models.saved_outputs import describe, write_description
from ..models.training_memory import apply_liger_kernels, enable_checkpointing
from ..models.layouts import (
    ModelPlan, portable_reference, recorded_language, resolve_model,
)
from ..config import SimCSEConfig, config_to_dict
from ..errors import ConfigError, DataError
from ..paths import check_apart, clear_output_dir
from ..processes import main_process_first, quiet_unless_main, training_device, world_size
from .reporting import TrainingResult
from ..objectives.contrastive import check_matryoshka
from ..objectives.simcse import SimCSEModel, pair_similarities, prepare_tokenizer_for_pooling, set_attention_dropout
from .simcse_trainer import SimCSETrainer
from ..data.texts import EvalPairs, SimCSECollator, eval_pairs, simcse_datasets
from .arguments import build_training_arguments, text_source
from .eval_tasks import task_columns, task_scorer
from .run import cap_sequence_length, final_evaluation, finish_run, input_paths, start_run, train

PLOT_FILE = "simcse_curves.png"
TABLE_COLUMNS = {"Alignment": "eval_alignment", "Uniformity": "eval_uniformity"}




def run_simcse(config: SimCSEConfig, resume: str | bool | None = None, log=print) -> TrainingResult:
    """Train a SimCSE adapter as `config` says; `resume` = True (last checkpoint) or a checkpoint path."""
    log = quiet_unless_main(log)
    checkpoint, callbacks = start_run(config, resume, log)
    global_batch = config.per_device_train_batch_size * world_size()
    check_negatives(config.per_device_train_batch_size, global_batch)
    set_seed(config.seed)

    # base + MNTP adapter, any layouts; an adapter recorded for another base is an error here
    plan = resolve_model(config.model_name_or_path, config.peft_model_name_or_path)
    model_config = read_model_config(plan, config.cache_dir, config.trust_remote_code)  # the run's one read
    check_causal_lm(model_config, plan.reference)
    check_apart(config.output_dir, "output_dir", input_paths(config, plan))
    config = cap_sequence_length(config, position_limit(model_config), log)
    tokenizer = load_tokenizer(plan, config.cache_dir, config.trust_remote_code)  # the encoder loads the same
    prepare_tokenizer_for_pooling(tokenizer, config.pooling_mode)
    with main_process_first():  # one process tokenizes; the others read datasets' cache
        datasets = simcse_datasets(tokenizer, config.max_seq_length, config.pooling_mode, text_source(config))
    if len(datasets["train"]) < global_batch:
        raise DataError(
            f"the training data has {len(datasets['train'])} distinct texts, fewer than one batch of {global_batch} "
            "(per_device_train_batch_size x processes): add text or lower per_device_train_batch_size"
        )
    pairs = None
    if config.eval_pairs_file is not None:
        pairs = eval_pairs(config.eval_pairs_file, tokenizer, config.max_seq_length, config.pooling_mode)
    do_eval = config.do_eval and len(datasets["validation"]) > 1
    model = build_simcse_model(config, plan, tokenizer, model_config)
    log(trainable_parameters_line(model))
    log(f"train texts: {len(datasets['train']):,} | held-out texts: {len(datasets['validation']):,} | up to "
        f"{config.max_seq_length} tokens | {global_batch} texts per step, two dropout views each "
        f"(simcse_dropout {config.simcse_dropout}) | pooling: {config.pooling_mode}")

    collator = SimCSECollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    args = build_training_arguments(
        config,
        do_eval=do_eval,
        eval_strategy=config.eval_strategy if do_eval else "no",
        # step 0 shows the MNTP-only encoder, so the table says what SimCSE changed
        eval_on_start=do_eval and checkpoint is None,
        # a short last batch would have fewer negatives (or none); distinct texts + no top-up = no duplicates
        dataloader_drop_last=True,
        remove_unused_columns=False,
        label_names=[],
    )
    trainer = SimCSETrainer(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"] if do_eval else None,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        loss_scale=config.loss_scale,
        mini_batch_size=config.mini_batch_size,
        pairs=(pairs.first, pairs.second, pairs.scores) if pairs is not None else None,
        loss_options=config.matryoshka(),
        task_scorer=task_scorer(config, tokenizer, position_limit(model_config), config.pooling_mode) if do_eval else None,
    )
    if config.overwrite_output_dir and checkpoint is None:
        clear_output_dir(config.output_dir)  # every input checked: the earlier run's files (and checkpoints) go
    if config.do_train:
        train(trainer, checkpoint)
    final = final_evaluation(trainer) if do_eval else {}
    similarities = []
    if pairs is not None:
        similarities = _pairs_before_and_after(
            model, pairs, collator, config.per_device_eval_batch_size, trainer.pair_cosines, trainer.state.global_step
        )

    columns = {**TABLE_COLUMNS, **({"Spearman": "eval_spearman"} if pairs else {}), **task_columns(config)}
    data = config.dataset_file_path or config.dataset_path or config.train_file or config.dataset_name
    return finish_run(trainer, model, config, final, columns, lambda: _save_run_description(config, plan), data, PLOT_FILE,
                      "SimCSE", do_eval, pairs=similarities)


def check_negatives(per_device_batch: int, global_batch: int) -> None:
    """SimCSE's negatives are the other texts of the (global) batch: one text has none."""
    if global_batch < 2:
        raise ConfigError(
            "per_device_train_batch_size",
            per_device_batch,
            "at least 2 texts per step over all processes (the other texts of a batch are each text's negatives)",
            fix="raise it (llm2vec uses 128); mini_batch_size keeps large batches within memory",
        )


def build_simcse_model(
    config: SimCSEConfig, plan: ModelPlan, tokenizer, model_config: PretrainedConfig | None = None
) -> SimCSEModel:
    """Base → MNTP adapter merged → bidirectional → SimCSE dropout → fresh LoRA (only its weights train)."""
    decoder = load_model(
        plan,
        merge_peft=True,
        bidirectional=config.bidirectional,
        torch_dtype=config.torch_dtype,
        attn_implementation=config.attn_implementation,
        device=training_device(),
        model_config=model_config,
        **({"cache_dir": config.cache_dir} if config.cache_dir else {}),
    )
    set_attention_dropout(decoder, config.simcse_dropout)
    if config.liger_kernel:
        apply_liger_kernels(decoder)
    if config.gradient_checkpointing:
        enable_checkpointing(decoder)
    check_matryoshka(config.matryoshka_dims, decoder)
    decoder = add_lora(
        decoder, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules, config.lean_activations
    )
    return SimCSEModel(decoder, config.pooling_mode, tokenizer.bos_token_id)




def _pairs_before_and_after(
    model: SimCSEModel,
    pairs: EvalPairs,
    collator: SimCSECollator,
    batch_size: int,
    evaluated: dict[int, list[float]],
    final_step: int,
) -> list[dict[str, Any]]:
    """Cosine of every pair for the MNTP-only encoder (the SimCSE adapter switched off) and the trained one.

    Evaluations already computed them at step 0 (the fresh LoRA adds exactly zero) and at the final step.
    """
    after = evaluated.get(final_step)
    if after is None:
        after = pair_similarities(model, pairs.first, pairs.second, collator, batch_size)
    before = evaluated.get(0)
    if before is None:
        with model.decoder.disable_adapter():
            before = pair_similarities(model, pairs.first, pairs.second, collator, batch_size)
    return [
        {"sentence1": s1, "sentence2": s2, "score": score, "before": b, "after": a}
        for s1, s2, score, b, a in zip(pairs.sentences1, pairs.sentences2, pairs.scores, before, after)
    ]


def _save_run_description(config: SimCSEConfig, plan: ModelPlan) -> dict[str, Any]:
    """The versioned bg2vec_config.json from which `Bg2Vec.from_pretrained(output_dir)` rebuilds the encoder:
    base and MNTP adapter as given (local paths relative to the output), resolved on load as they were here."""
    output_dir = Path(config.output_dir)
    base = portable_reference(config.model_name_or_path, output_dir)
    mntp_adapter = config.peft_model_name_or_path
    portable_adapter_config(output_dir, portable_reference(config.model_name_or_path))  # absolute where local
    return write_description(output_dir, describe(
        "simcse",
        base_model_name_or_path=base,
        language=recorded_language(config.language, plan),
        mntp_adapter=portable_reference(mntp_adapter, output_dir) if mntp_adapter else None,
        bidirectional=config.bidirectional,
        pooling_mode=config.pooling_mode,
        max_length=config.max_seq_length,
        skip_instruction=True,
        matryoshka_dims=config.matryoshka_dims,
        torch_dtype=config.torch_dtype,
        training_config=config_to_dict(config),
    ))
