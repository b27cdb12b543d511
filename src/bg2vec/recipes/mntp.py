"""The Bi-MNTP recipe (`bg2vec mntp CONFIG.json`): set up, train, save. Reads top to bottom.

1. check the output folder and load tokenizer, model and data (every input error surfaces here, before
   anything is written);
2. make the decoder bidirectional (verified), wrap it in LoRA, train with the MNTP objective;
3. save the adapter (llm2vec's layout), tokenizer, config.json, bg2vec_config.json, metrics and a plot.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PretrainedConfig, set_seed

from ..models.adapters import portable_adapter_config
from ..models.portable_files import portable_model_config
from ..models.backbone import check_causal_lm, load_model, load_tokenizer, position_limit, read_model_config
from ..models.lora import add_lora, trainable_parameters_line
from ..models.saved_outputs import describe, write_description
from ..models.training_memory import apply_liger_kernels, enable_checkpointing
from ..models.layouts import (
    ModelPlan, portable_reference, recorded_language, resolve_model,
)
from ..config import MNTPConfig, config_to_dict
from ..data.blocks import mntp_datasets
from ..objectives.masking import MaskingEpoch, MaskToken, MNTPCollator, prepare_tokenizer
from ..objectives.mntp import MNTPModel, masked_token_accuracy
from ..paths import check_apart, clear_output_dir
from ..processes import main_process_first, quiet_unless_main, training_device
from .reporting import TrainingResult
from .arguments import build_training_arguments, text_source
from .eval_tasks import task_columns, task_scorer
from .run import cap_sequence_length, final_evaluation, finish_run, input_paths, start_run, train
from .trainer import AdapterTrainer

PLOT_FILE = "mntp_curves.png"
TABLE_COLUMNS = {"Accuracy": "eval_accuracy"}




def build_mntp_model(
    config: MNTPConfig, plan: ModelPlan, tokenizer, model_config: PretrainedConfig | None = None
) -> MNTPModel:
    """Base model (any adapters of its chain merged; grown if the tokenizer gained a mask token) →
    bidirectional decoder with LoRA + LM head (frozen unless train_lm_head)."""
    model = load_model(
        replace(plan, vocab_size=max(len(tokenizer), plan.vocab_size or 0)),
        bidirectional=config.bidirectional,
        with_lm_head=True,
        torch_dtype=config.torch_dtype,
        attn_implementation=config.attn_implementation,
        device=training_device(),
        model_config=model_config,
        **_hub_kwargs(config),
    )
    if config.liger_kernel:
        apply_liger_kernels(model)
    decoder = model.get_decoder()
    lm_head = model.get_output_embeddings()
    lm_head = _lm_head_for_training(lm_head, decoder, config.train_lm_head)
    if config.gradient_checkpointing:
        enable_checkpointing(decoder)
    decoder = add_lora(
        decoder, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules, config.lean_activations
    )
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return MNTPModel(decoder, lm_head, softcap)


def _lm_head_for_training(lm_head: nn.Module, decoder: nn.Module, train: bool) -> nn.Module:
    """Freeze the LM head, or make it trainable; a head tied to the input embeddings is untied first so
    training it does not also move the (frozen) embeddings."""
    if train and lm_head.weight is decoder.get_input_embeddings().weight:
        untied = nn.Linear(lm_head.in_features, lm_head.out_features, bias=False, dtype=lm_head.weight.dtype)
        untied.weight = nn.Parameter(lm_head.weight.detach().clone())
        lm_head = untied
    lm_head.requires_grad_(train)
    return lm_head


def accuracy_metric(eval_prediction) -> dict[str, float]:
    """Trainer `compute_metrics`: the masked-token accuracy with the i-1 shift."""
    predictions = eval_prediction.predictions
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    return {"accuracy": masked_token_accuracy(predictions, eval_prediction.label_ids)}


def run_mntp(config: MNTPConfig, resume: str | bool | None = None, log=print) -> TrainingResult:
    """Train a Bi-MNTP adapter as `config` says; `resume` = True (last checkpoint) or a checkpoint path."""
    log = quiet_unless_main(log)
    checkpoint, callbacks = start_run(config, resume, log)
    set_seed(config.seed)

    plan = resolve_model(config.model_name_or_path)
    model_config = read_model_config(plan, config.cache_dir, config.trust_remote_code)  # the run's one read
    check_causal_lm(model_config, plan.reference)
    check_apart(config.output_dir, "output_dir", input_paths(config, plan))
    config = cap_sequence_length(config, position_limit(model_config), log)
    tokenizer = load_tokenizer(plan, config.cache_dir, config.trust_remote_code)
    mask = prepare_tokenizer(tokenizer, config.mask_token_type)
    with main_process_first():  # one process tokenizes; the others read datasets' cache
        datasets = mntp_datasets(tokenizer, config.max_seq_length, text_source(config))
    do_eval = config.do_eval and len(datasets.get("validation", [])) > 0
    model = build_mntp_model(config, plan, tokenizer, model_config)
    log(trainable_parameters_line(model))
    log(f"train blocks: {len(datasets['train']):,} | validation blocks: {len(datasets['validation']):,} "
        f"| block: {config.max_seq_length} tokens | mask token: {mask.text!r}")

    collator = MNTPCollator.for_tokenizer(
        tokenizer, mask, mlm_probability=config.mlm_probability, collator_type=config.data_collator_type, seed=config.seed
    )
    args = build_training_arguments(
        config,
        do_eval=do_eval,
        eval_strategy=config.eval_strategy if do_eval else "no",
        # step 0 shows the untrained model, so the table says what training changed
        eval_on_start=do_eval and checkpoint is None,
    )
    trainer = AdapterTrainer(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"] if do_eval else None,
        data_collator=collator,
        eval_data_collator=replace(collator),  # epoch 0 for good: every evaluation masks alike
        processing_class=tokenizer,
        compute_metrics=accuracy_metric if do_eval else None,
        callbacks=callbacks + [MaskingEpoch(collator)],
        save_kwargs={"train_lm_head": config.train_lm_head},
        task_scorer=task_scorer(config, tokenizer, position_limit(model_config)) if do_eval else None,
    )
    if config.overwrite_output_dir and checkpoint is None:
        clear_output_dir(config.output_dir)  # every input checked: the earlier run's files (and checkpoints) go
    if config.do_train:
        train(trainer, checkpoint)
    final = final_evaluation(trainer) if do_eval else {}

    data = config.dataset_path or config.train_file or config.dataset_name
    return finish_run(trainer, model, config, final, {**TABLE_COLUMNS, **task_columns(config)},
                      lambda: _save_run_description(model, mask, config, plan), data, PLOT_FILE, "Bi-MNTP", do_eval)




def _save_run_description(model: MNTPModel, mask: MaskToken, config: MNTPConfig, plan: ModelPlan) -> dict[str, Any]:
    """config.json (bidirectional flag included) and the versioned bg2vec_config.json a later step reads."""
    output_dir = Path(config.output_dir)
    model.config.save_pretrained(output_dir)
    portable_model_config(output_dir)
    base = portable_reference(config.model_name_or_path, output_dir)
    portable_adapter_config(output_dir, portable_reference(config.model_name_or_path))  # absolute where local
    return write_description(output_dir, describe(
        "mntp",
        base_model_name_or_path=base,
        language=recorded_language(config.language, plan),
        bidirectional=config.bidirectional,
        # embedding rows after a mask token was added (the new row is the mean row, never trained), else None
        vocab_size=model.decoder.get_input_embeddings().weight.shape[0] if mask.added else None,
        mask_token=mask.text,
        mask_token_id=mask.id,
        mask_token_type=config.mask_token_type,
        lm_head_trained=config.train_lm_head,
        pooling_mode="mean",
        max_length=config.max_seq_length,
        skip_instruction=True,
        training_config=config_to_dict(config),
    ))


def _hub_kwargs(config: MNTPConfig) -> dict[str, Any]:
    return {"cache_dir": config.cache_dir, "trust_remote_code": config.trust_remote_code} if config.cache_dir else {
        "trust_remote_code": config.trust_remote_code
    }
