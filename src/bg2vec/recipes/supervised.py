"""The supervised recipe (`bg2vec supervised CONFIG.json`): set up, train, save. Reads top to bottom.

1. check the output folder, the model (base + MNTP adapter, as llm2vec's run_supervised.py starts, or any
   encoder folder) and the rows (a .jsonl file or llm2vec's E5 folder): every input error surfaces here;
2. load the base, merge the MNTP chain, attend both ways, add a fresh LoRA; train on batches of one dataset
   each with InfoNCE over in-batch and hard negatives (duplicate positives are never negatives), the texts
   built as `encode` builds them (the instruction prepended to the query and left out of pooling);
3. save the adapter, tokenizer, bg2vec_config.json (base + MNTP adapter: the folder alone loads), metrics, plot;
   the table shows held-out retrieval accuracy before (step 0) and after.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig, set_seed

from ..config import SupervisedConfig, config_to_dict
from ..objectives.distillation import read_teacher_embeddings
from ..data.triples import Triple, TripleData, dataset_batches, nothing_to_learn, read_triples
from ..errors import DataError
from ..models.adapters import portable_adapter_config
from ..models.backbone import check_causal_lm, load_model, load_tokenizer, position_limit, read_model_config
from ..models.lora import add_lora, trainable_parameters_line
from ..models.saved_outputs import describe, file_records, write_description
from ..models.training_memory import enable_checkpointing
from ..models.layouts import (
    ModelPlan, portable_reference, recorded_language, resolve_model,
)
from ..objectives.contrastive import check_matryoshka
from ..objectives.simcse import SimCSEModel, prepare_tokenizer_for_pooling
from ..paths import check_apart, clear_output_dir
from ..processes import quiet_unless_main, rank, training_device, world_size
from .reporting import TrainingResult
from .supervised_trainer import SupervisedTrainer, TripleCollator
from .arguments import build_training_arguments
from .eval_tasks import task_columns, task_scorer
from .run import cap_sequence_length, final_evaluation, finish_run, input_paths, start_run, train

PLOT_FILE = "supervised_curves.png"
TABLE_COLUMNS = {"Accuracy@1": "eval_accuracy", "MRR": "eval_mrr"}




def run_supervised(config: SupervisedConfig, resume: str | bool | None = None, log=print) -> TrainingResult:
    """Train a supervised contrastive adapter as `config` says; `resume` = True or a checkpoint path."""
    log = quiet_unless_main(log)
    checkpoint, callbacks = start_run(config, resume, log)
    set_seed(config.seed)

    plan = resolve_model(config.model_name_or_path, config.peft_model_name_or_path)
    model_config = read_model_config(plan, config.cache_dir, config.trust_remote_code)  # the run's one read
    check_causal_lm(model_config, plan.reference)
    check_apart(config.output_dir, "output_dir", input_paths(config, plan))
    config = cap_sequence_length(config, position_limit(model_config), log)
    tokenizer = load_tokenizer(plan, config.cache_dir, config.trust_remote_code)
    prepare_tokenizer_for_pooling(tokenizer, config.pooling_mode)
    setting = "dataset_file_path" if config.dataset_file_path else "train_file"
    rows = read_triples(config.dataset_file_path or config.train_file, setting)
    teacher = None
    if config.teacher_embeddings is not None:  # checked before any model is loaded: rows, ids, NaN
        teacher = read_teacher_embeddings(config.teacher_embeddings, len(rows))
    held_out = _held_out(rows, config)
    global_batch = config.per_device_train_batch_size * world_size()
    problem = nothing_to_learn(rows, global_batch)
    if problem:
        raise DataError(f"{setting}={str(config.dataset_file_path or config.train_file)!r}: {problem}, so the loss is 0 at "
                        "every step and nothing is learned; add rows with distinct positives or hard negatives")
    batches = dataset_batches(rows, global_batch, config.seed)
    if not batches:
        raise DataError(
            f"no dataset has {global_batch} rows (per_device_train_batch_size x processes), so no batch can be made: "
            "add rows or lower per_device_train_batch_size"
        )
    me, size = rank(), config.per_device_train_batch_size
    mine = [batch[me * size : (me + 1) * size] for batch in batches]  # this process's share of each global batch
    do_eval = config.do_eval and len(held_out) > 1
    model = build_supervised_model(config, plan, tokenizer, model_config)
    log(trainable_parameters_line(model))
    log(f"train rows: {len(rows):,} in {len(rows.datasets)} dataset(s), {len(batches):,} batches of {global_batch} | "
        f"held-out rows: {len(held_out):,} | hard negatives: {sum(len(t.negatives) for r in rows.datasets.values() for t in r):,} | "
        f"up to {config.max_seq_length} tokens | pooling: {config.pooling_mode}")

    args = build_training_arguments(
        config, do_eval=do_eval, eval_strategy=config.eval_strategy if do_eval else "no",
        eval_on_start=do_eval and checkpoint is None, remove_unused_columns=False, label_names=[],
    )
    trainer = SupervisedTrainer(
        model=model, args=args, data_collator=TripleCollator(_input_rules(model, tokenizer, plan, config), teacher), processing_class=tokenizer,
        callbacks=callbacks,
        batches=mine, held_out=held_out, loss_scale=config.loss_scale, mini_batch_size=config.mini_batch_size,
        teacher_weight=config.teacher_weight,
        loss_options={"symmetric": config.symmetric, "hard_negative_weight": config.hard_negative_weight, **config.matryoshka()},
        task_scorer=task_scorer(config, tokenizer, position_limit(model_config), config.pooling_mode) if do_eval else None,
        eval_dataset=[0] if do_eval else None,
    )
    if config.overwrite_output_dir and checkpoint is None:
        clear_output_dir(config.output_dir)
    if config.do_train:
        train(trainer, checkpoint)
    final = final_evaluation(trainer) if do_eval else {}

    return finish_run(trainer, model, config, final, {**TABLE_COLUMNS, **task_columns(config)},
                      lambda: _save_run_description(config, plan), config.dataset_file_path or config.train_file, PLOT_FILE,
                      "Supervised", do_eval)


def _input_rules(model: SimCSEModel, tokenizer, plan: ModelPlan, config: SupervisedConfig):
    """A `Bg2Vec` over the model being trained, with the run's settings: its `tokenize` builds every training
    input exactly as the finished encoder will (on a copy of the tokenizer: the encoder pads on the left)."""
    import copy

    from ..encoding.encoder import Bg2Vec, EncoderSettings
    from ..encoding.inputs import chat_format_for

    settings = EncoderSettings(pooling_mode=config.pooling_mode, max_length=config.max_seq_length,
                               doc_max_length=min(400, config.max_seq_length))
    name = plan.base_reference or plan.weights
    encoder = Bg2Vec(model.decoder, copy.deepcopy(tokenizer), settings, name, chat_format_for(list(plan.names) + [name]), plan)
    model.decoder.train()  # Bg2Vec switched it to eval mode
    return encoder


def _held_out(rows: TripleData, config: SupervisedConfig) -> list[Triple]:
    """validation_file's rows, or a seeded share of every dataset taken out of training (capped)."""
    if config.validation_file is not None:
        held = [t for dataset in read_triples(config.validation_file, "validation_file").datasets.values() for t in dataset]
    else:
        generator, held = random.Random(config.seed), []
        for name, dataset in rows.datasets.items():
            count = round(len(dataset) * config.validation_split_percentage / 100)
            picked = set(generator.sample(range(len(dataset)), count))
            held += [t for i, t in enumerate(dataset) if i in picked]
            rows.datasets[name] = [t for i, t in enumerate(dataset) if i not in picked]
    if config.max_train_samples is not None:
        for name in rows.datasets:
            rows.datasets[name] = rows.datasets[name][: config.max_train_samples]
    return held[: config.max_eval_samples] if config.max_eval_samples else held


def build_supervised_model(
    config: SupervisedConfig, plan: ModelPlan, tokenizer, model_config: PretrainedConfig | None = None
) -> SimCSEModel:
    """Base → MNTP chain merged → bidirectional → fresh LoRA (only its weights train)."""
    decoder = load_model(
        plan, merge_peft=True, bidirectional=config.bidirectional, torch_dtype=config.torch_dtype,
        attn_implementation=config.attn_implementation, device=training_device(), model_config=model_config,
        **({"cache_dir": config.cache_dir} if config.cache_dir else {}),
    )
    if config.gradient_checkpointing:
        enable_checkpointing(decoder)
    check_matryoshka(config.matryoshka_dims, decoder)
    decoder = add_lora(
        decoder, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules, config.lean_activations
    )
    return SimCSEModel(decoder, config.pooling_mode, tokenizer.bos_token_id)




def _save_run_description(config: SupervisedConfig, plan: ModelPlan) -> dict[str, Any]:
    """bg2vec_config.json: base and MNTP adapter as given, so `Bg2Vec.from_pretrained(output_dir)` loads alone."""
    output_dir = Path(config.output_dir)
    base = portable_reference(config.model_name_or_path, output_dir)
    mntp_adapter = config.peft_model_name_or_path
    portable_adapter_config(output_dir, portable_reference(config.model_name_or_path))  # absolute where local
    return write_description(output_dir, describe(
        "supervised",
        base_model_name_or_path=base,
        language=recorded_language(config.language, plan),
        mntp_adapter=portable_reference(mntp_adapter, output_dir) if mntp_adapter else None,
        bidirectional=config.bidirectional, pooling_mode=config.pooling_mode, max_length=config.max_seq_length,
        skip_instruction=True, matryoshka_dims=config.matryoshka_dims, torch_dtype=config.torch_dtype,
        training_files=file_records([config.dataset_file_path, config.train_file]),
        training_config=config_to_dict(config),
    ))
