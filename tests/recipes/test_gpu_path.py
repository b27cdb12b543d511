"""What a GPU run relies on, checked on the CPU: the model reaches its training device before the bidirectional
check, bf16, gradient checkpointing (with gradient caching too), the state dict FSDP/ZeRO-3 hand over, Liger
kernels asked for without the package, and a real two-process torchrun (gloo) of the MNTP recipe."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, PreTrainedModel

import bg2vec.models.backbone as backbone
from bg2vec import Bg2Vec
from bg2vec.config import MNTPConfig, SimCSEConfig
from bg2vec.errors import ConfigError
from bg2vec.models.layouts import resolve_model
from bg2vec.objectives.mntp import MNTPModel
from bg2vec.recipes.mntp import run_mntp
from bg2vec.recipes.simcse import run_simcse
from bg2vec.models.lora import add_lora

from conftest import REPO


def quiet(*args, **kwargs):
    pass


def test_weights_move_to_the_device_before_the_bidirectional_check(tiny_model_dirs, monkeypatch):
    events = []
    monkeypatch.setattr(PreTrainedModel, "to", lambda self, device, *a, **k: events.append(("to", str(device))) or self)
    check = backbone.enable_bidirectional
    monkeypatch.setattr(backbone, "enable_bidirectional", lambda model: events.append(("check",)) or check(model))
    backbone.load_model(resolve_model(str(tiny_model_dirs["mistral"])), device="cuda:3")
    assert events == [("to", "cuda:3"), ("check",)]


def mntp_config(tiny_model_dirs, corpus_files, output_dir, **changes) -> MNTPConfig:
    values = dict(
        model_name_or_path=str(tiny_model_dirs["llama"]), train_file=str(corpus_files["train"]), output_dir=str(output_dir),
        max_seq_length=32, per_device_train_batch_size=4, max_steps=3, do_eval=False, save_steps=1000, lora_r=4,
        learning_rate=1e-2, data_collator_type="all_mask", mlm_probability=0.5, seed=5, lora_dropout=0.0,
    )
    return MNTPConfig(**{**values, **changes})


def same_adapter(a, b, atol=1e-5) -> None:
    first, second = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.allclose(first[key].float(), second[key].float(), atol=atol), key


def test_gradient_checkpointing_trains_the_same_mntp_adapter(tiny_model_dirs, corpus_files, tmp_path):
    """Same gradients, so the same adapter (without dropout: with it, the masks are drawn in another order)."""
    run_mntp(mntp_config(tiny_model_dirs, corpus_files, tmp_path / "plain"), log=quiet)
    run_mntp(mntp_config(tiny_model_dirs, corpus_files, tmp_path / "checkpointed", gradient_checkpointing=True), log=quiet)
    same_adapter(tmp_path / "plain", tmp_path / "checkpointed")


def test_gradient_checkpointing_with_gradient_caching_trains_the_same_simcse_adapter(tiny_model_dirs, corpus_files, tmp_path):
    common = dict(
        model_name_or_path=str(tiny_model_dirs["mistral"]), train_file=str(corpus_files["train"]), max_seq_length=24,
        per_device_train_batch_size=8, max_steps=2, do_eval=False, save_steps=1000, lora_r=4, learning_rate=1e-2, seed=3,
        simcse_dropout=0.0, lora_dropout=0.0,  # dropout masks are drawn in another order once layers are recomputed
    )
    run_simcse(SimCSEConfig(**common, output_dir=str(tmp_path / "plain")), log=quiet)
    run_simcse(SimCSEConfig(**common, output_dir=str(tmp_path / "both"), gradient_checkpointing=True, mini_batch_size=4), log=quiet)
    same_adapter(tmp_path / "plain", tmp_path / "both")


def test_gradient_accumulation_trains_the_same_mntp_adapter_as_one_big_batch(tiny_model_dirs, corpus_files, tmp_path):
    """The loss is summed over labelled tokens and divided by the step's count (the Trainer's num_items_in_batch),
    so micro-batches with more masked tokens weigh more, exactly as in one batch of 4."""
    run_mntp(mntp_config(tiny_model_dirs, corpus_files, tmp_path / "one"), log=quiet)
    run_mntp(mntp_config(tiny_model_dirs, corpus_files, tmp_path / "two", per_device_train_batch_size=2,
                         gradient_accumulation_steps=2), log=quiet)
    same_adapter(tmp_path / "one", tmp_path / "two")


def test_two_processes_train_the_same_mntp_adapter_as_one_with_the_same_global_batch(tiny_model_dirs, corpus_files, tmp_path):
    """torchrun, 2 processes x 2 rows (gloo, real DDP) against 1 process x 4 rows: the same adapter."""
    single = mntp_config(tiny_model_dirs, corpus_files, tmp_path / "single")
    run_mntp(single, log=quiet)
    config = tmp_path / "ddp.json"
    values = {**{f.name: getattr(single, f.name) for f in dataclasses.fields(single) if f.name != "extra_training_args"},
              "output_dir": str(tmp_path / "ddp"), "per_device_train_batch_size": 2}
    config.write_text(json.dumps(values))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29536",
         "-m", "bg2vec.cli", "mntp", str(config)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    same_adapter(tmp_path / "single", tmp_path / "ddp")


def test_bf16_training_runs_on_the_cpu(tiny_model_dirs, corpus_files, tmp_path):
    result = run_mntp(mntp_config(tiny_model_dirs, corpus_files, tmp_path / "bf16", torch_dtype="bfloat16", bf16=True,
                                  do_eval=True, eval_steps=3), log=quiet)
    assert torch.isfinite(torch.tensor(result.final["eval_loss"]))
    assert Bg2Vec.from_pretrained(str(tmp_path / "bf16"), torch_dtype="bfloat16").encode(["Здравей"]).shape == (1, 64)


def _fsdp_model(folder):
    """The MNTP model of the recipe (lean LoRA on), with every LoRA B drawn so that each factor matters."""
    torch.manual_seed(0)
    causal = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = MNTPModel(add_lora(causal.get_decoder(), 4, 8, 0.0), causal.get_output_embeddings().requires_grad_(False))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    return model


def _fsdp_step(model, ids):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    (model(input_ids=ids)["last_hidden_state"] ** 2).mean().backward()
    optimizer.step()


FSDP_IDS = torch.arange(40).reshape(4, 10) % 50 + 5  # (4, 10): the global batch, 2 rows per process


def _fsdp_worker(rank, folder, out):
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=2)
    model = _fsdp_model(folder)
    for layer in model.decoder.base_model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    _fsdp_step(model, FSDP_IDS[2 * rank : 2 * rank + 2])
    sharded = type(next(model.parameters())).__name__
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:  # what the Trainer does under FSDP: gather the full state dict, save from it on rank 0
        model.save_pretrained(f"{out}/fsdp", train_lm_head=False, state_dict=state)
        Path(f"{out}/sharded").write_text(sharded)
    os._exit(0)  # see test_simcse: tearing gloo down can deadlock


def test_fsdp_sharded_training_saves_the_whole_adapter(tiny_model_dirs, tmp_path):
    """Real FSDP (torch's fully_shard, 2 CPU processes over gloo): the parameters are shards (DTensors), and the
    adapter saved from the gathered state dict equals one trained unsharded on the same global batch. (The
    Trainer's own FSDP wiring needs GPUs: on CPUs accelerate runs DDP instead.)"""
    import torch.multiprocessing as mp

    workers = mp.spawn(_fsdp_worker, args=(str(tiny_model_dirs["llama"]), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not workers.join(timeout=5):  # True once every worker has exited (an error in one raises here)
        assert time.monotonic() < deadline, "the FSDP workers did not finish within 240 s"
    assert (tmp_path / "sharded").read_text() == "DTensor"
    reference = _fsdp_model(tiny_model_dirs["llama"])
    _fsdp_step(reference, FSDP_IDS)
    reference.save_pretrained(tmp_path / "single", train_lm_head=False)
    same_adapter(tmp_path / "single", tmp_path / "fsdp", atol=1e-6)


def test_fsdp_without_gpus_says_it_runs_ddp(tiny_model_dirs, corpus_files, tmp_path):
    from bg2vec.recipes.arguments import build_training_arguments

    config = mntp_config(tiny_model_dirs, corpus_files, tmp_path / "o", extra_training_args={"fsdp": "full_shard"})
    with pytest.warns(UserWarning, match="without GPUs accelerate runs plain DDP"):
        build_training_arguments(config)


def test_the_gathered_state_dict_is_what_gets_saved(tiny_model_dirs, tmp_path):
    """Under FSDP / ZeRO-3 the parameters are shards; the Trainer hands `_save` the gathered full state dict."""
    causal = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"])
    model = MNTPModel(add_lora(causal.get_decoder(), 4, 8, 0.0), causal.get_output_embeddings())
    gathered = {key: torch.full_like(value, 7.0) for key, value in model.state_dict().items()}
    model.save_pretrained(tmp_path, train_lm_head=True, state_dict=gathered)
    adapter = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert adapter and all(bool((value == 7.0).all()) for value in adapter.values())
    assert bool((load_file(str(tmp_path / "lm_head.safetensors"))["weight"] == 7.0).all())


def test_liger_kernels_without_the_package_are_a_clear_error(tiny_model_dirs, corpus_files, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "liger_kernel" or m.startswith("liger_kernel.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # absent, installed or not: importing it fails
    with pytest.raises(ConfigError, match="liger_kernel.*pip install liger-kernel"):
        run_mntp(mntp_config(tiny_model_dirs, corpus_files, tmp_path / "liger", liger_kernel=True), log=quiet)


@pytest.mark.parametrize("command, port", [("mntp", 29533), ("simcse", 29534), ("supervised", 29535)])
def test_torchrun_with_two_processes_trains_once_and_reports_once(command, port, tiny_model_dirs, corpus_files, tmp_path):
    """A real DDP run (gloo on CPU): one set of logs and one table, checkpoints holding both ranks' RNG states."""
    out = tmp_path / "ddp"
    config = tmp_path / "ddp.json"
    held_out = tmp_path / "held-out.txt"  # texts of their own: SimCSE keeps only those not in train
    held_out.write_text("".join(f"Изречение {i} за проверка на модела.\n" for i in range(12)), encoding="utf-8")
    values = dict(
        model_name_or_path=str(tiny_model_dirs["llama"]), train_file=str(corpus_files["train"]),
        validation_file=str(held_out), output_dir=str(out), max_seq_length=32,
        per_device_train_batch_size=2, max_steps=4, eval_steps=2, save_steps=2, lora_r=4, learning_rate=1e-2,
    )
    if command == "supervised":  # rows of (query, positive, negative); held-out rows of their own
        rows = [{"query": f"Въпрос {i}?", "positive": f"Отговор {i}.", "negative": f"Друг отговор {i + 1}."} for i in range(40)]
        triples, held = tmp_path / "triples.jsonl", tmp_path / "held.jsonl"
        triples.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:32]), encoding="utf-8")
        held.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[32:]), encoding="utf-8")
        values.update(train_file=str(triples), validation_file=str(held))
    config.write_text(json.dumps(values))
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
         "-m", "bg2vec.cli", command, str(config)],
        capture_output=True, text=True, env=environment, timeout=600,
    )
    ranks = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("[rank")]  # whole tracebacks
    assert done.returncode == 0, "\n".join(ranks[:120]) + "\n" + done.stderr[-2000:]
    assert done.stdout.count("Step | Training Loss") == 1, done.stdout
    assert done.stdout.count("'eval_loss'") == 3, "evaluations at steps 0, 2, 4, logged once each"
    assert done.stdout.count("trainable params") == 1 and done.stdout.count("saved adapter") == 1
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert sorted(p.name for p in (out / "checkpoint-4").glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert Bg2Vec.from_pretrained(str(out)).encode(["Здравей"]).shape == (1, 64)


def test_the_gpu_check_script_runs_its_smoke_part_here(tmp_path):
    """benchmarks/gpu_check.py stays ready for the GPU machine: its smoke runs (bf16, checkpointing) work on CPU."""
    script = REPO / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--smoke-only"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["attention"] for r in report["smoke"]][0] == "sdpa"
    assert all(r["finite"] and r["simcse_eval_loss"] is not None for r in report["smoke"])
