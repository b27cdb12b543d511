"""`bg2vec encode-corpus` top to bottom: check everything, plan (or resume) the shards, run an engine, summarise.

Every check that can fail on the user's input runs before a shard is written: paths (the output apart from every
input and the model), columns, a full pass over the inputs (rows counted, ids unique), and on a re-run the
recorded settings and inputs against today's. A re-run with everything finished loads no model.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from .._version import __version__
from ..config import EncodeCorpusConfig
from ..errors import ConfigError
from ..models.layouts import ModelPlan, resolve_model
from ..locks import output_lock
from ..paths import check_apart, check_creatable
from ..corpus.plan import plan_shards
from ..corpus.progress import Progress
from ..corpus.provenance import model_digest
from ..corpus.shards import MANIFEST_FILE, PARTIAL_SUFFIX, Manifest, ShardWriter, tidy
from ..corpus.sources import Columns, InputFile, check_columns, find_inputs, scan
from ..corpus.vectors import stored_width

# Settings a re-run must repeat: they decide the shards and every vector (engine, devices and batching do not).
RESUME_KEYS = ("model_name_or_path", "adapter", "text_column", "id_column", "instruction_column", "instruction", "dtype",
               "dim", "normalize", "pooling_mode", "max_length", "torch_dtype", "shard_rows")  # fmt: skip


@dataclass(frozen=True)
class CorpusSummary:
    """What a run did: rows and tokens it encoded, shards written and skipped, seconds, and where."""

    output: str
    rows: int  # rows encoded by this run
    tokens: int
    shards_written: int
    shards_skipped: int  # finished by an earlier run
    shards_total: int
    rows_total: int
    seconds: float  # the whole run: checks, reading, model loading, encoding
    encode_seconds: float  # from the model loaded (local) or the actor pool starting (Ray) to the last shard
    steady_rows_per_s: float | None  # after the first batch: start-up left out

    def line(self) -> str:
        rate = self.rows / self.encode_seconds if self.encode_seconds > 0 else 0.0
        steady = f", {self.steady_rows_per_s:,.0f} rows/s after the first batch" if self.steady_rows_per_s else ""
        skipped = f", {self.shards_skipped} finished earlier and skipped" if self.shards_skipped else ""
        return (f"encoded {self.rows:,} rows ({self.tokens:,} tokens) into {self.shards_written} shards{skipped} in "
                f"{self.encode_seconds:.1f} s ({rate:,.0f} rows/s{steady}); took {self.seconds:.1f} s in all; "
                f"{self.rows_total:,} rows in {self.shards_total} shards at {self.output}")


def encode_corpus(config: EncodeCorpusConfig, stream: TextIO | None = None) -> CorpusSummary:
    """Encode `config.inputs` into shards under `config.output`, resuming a run recorded there.

    >>> encode_corpus(EncodeCorpusConfig(inputs=["docs/*.jsonl.gz"], output="vectors", model_name_or_path="outputs/simcse"))
    """
    with output_lock(config.output, "output"):  # one run per output folder; a second is one line naming the holder
        return _encode_corpus(config, stream)


def _encode_corpus(config: EncodeCorpusConfig, stream: TextIO | None) -> CorpusSummary:
    stream = stream or sys.stderr
    started = time.perf_counter()
    output = Path(config.output)
    files = find_inputs(config.inputs)
    columns = Columns(config.text_column, config.id_column, config.instruction_column)
    check_columns(files, columns)
    if config.instruction is not None and config.instruction_column is not None:
        raise ConfigError("instruction", config.instruction, "no --instruction with --instruction-column",
                          fix="rows without their own instruction take --instruction only when no column is named; pick one")
    if config.engine == "ray":
        from ..corpus.ray_engine import check_ray

        check_ray(config.ray_address)
    plan = resolve_model(config.model_name_or_path, config.adapter)
    _check_output(output, config, files, plan.adapters + (plan.weights, plan.tokenizer))
    manifest = None if config.overwrite else Manifest.load(output)
    digest, model_files = model_digest(plan, manifest.data.get("model_files") if manifest else None)
    settings = {**{key: getattr(config, key) for key in RESUME_KEYS}, "model_digest": digest, "bg2vec_version": __version__}
    inputs = [file.record() for file in files]
    if manifest is not None:
        _check_same_run(manifest, settings, inputs)
        forgotten = tidy(manifest)
        if forgotten:
            print(f"shards {forgotten} were recorded but their files are gone or changed: writing them again", file=stream)
    else:
        manifest = _start(config, output, files, columns, plan, settings, model_files)
    shards = manifest.shards
    finished = manifest.finished
    pending = [s for s in shards if s.index not in finished]
    if finished:
        print(f"resuming {output}: {len(finished)} of {len(shards)} shards finished earlier and skipped; "
              f"{len(pending)} to encode", file=stream)
    progress = Progress(sum(s.rows for s in pending), len(shards), len(finished), stream)
    if pending:
        from ..corpus.job import EncodeJob  # torch and the encoder: only when there is something to encode

        job = EncodeJob(plan, config.pooling_mode, config.max_length, config.torch_dtype, config.instruction, config.dim,
                        config.normalize, config.batch_size, config.max_batch_tokens)
        writer = ShardWriter(manifest)
        if config.engine == "ray":
            from ..corpus.ray_engine import RayPool, run_ray

            pool = RayPool(config.workers, config.cpus_per_worker, config.gpus_per_worker, config.ray_address)
            run_ray(files, columns, manifest.data["id_type"], pending, job, writer, progress, pool)
        else:
            from ..corpus.local import run_local

            run_local(files, columns, manifest.data["id_type"], pending, job, writer, progress, _devices(config.device))
    return CorpusSummary(str(output), progress.rows, progress.tokens, len(pending), len(finished), len(shards),
                         manifest.data["rows"], time.perf_counter() - started, progress.seconds if pending else 0.0,
                         progress.steady_rate())


def _start(config: EncodeCorpusConfig, output: Path, files: list[InputFile], columns: Columns, plan: ModelPlan,
           settings: dict[str, Any], model_files: dict[str, list]) -> Manifest:
    """A new run: read every input once (rows counted, ids unique), plan the shards, and only then clear an
    earlier run (with --overwrite) and save the manifest."""
    found = scan(files, columns)
    shards = plan_shards(found.rows, config.shard_rows)
    if not shards:
        raise ConfigError("inputs", config.inputs, "inputs holding at least one row", fix="they are empty")
    provenance = _provenance(config, plan, settings)
    inputs = [dict(file.record(), rows=rows) for file, rows in zip(files, found.rows)]
    manifest = Manifest.new(output, settings, provenance, inputs, shards, found.id_type, model_files)
    if config.overwrite:
        _clear(output)
    output.mkdir(parents=True, exist_ok=True)
    manifest.save()
    return manifest


def _check_output(output: Path, config: EncodeCorpusConfig, files: list[InputFile], model_paths: tuple[str, ...]) -> None:
    """The output is a folder apart from every input and model file, new or one this command wrote."""
    if output.exists() and not output.is_dir():
        raise ConfigError("output", str(output), "a folder path, not a file")
    given = {f"inputs[{i}]": name for i, name in enumerate(config.inputs) if Path(name).exists()}
    check_apart(output, "output", {**given, **{f"input file {i}": f.path for i, f in enumerate(files)},
                                   **{f"model {p}": p for p in model_paths if Path(p).exists()}})
    check_creatable(output, "output")
    first_save = output / (MANIFEST_FILE + PARTIAL_SUFFIX)  # a run killed while writing its first manifest
    held = sorted(p.name for p in output.iterdir() if p != first_save) if output.is_dir() else []
    if held and not (output / MANIFEST_FILE).is_file():
        found = ", ".join(held[:5])
        raise ConfigError("output", str(output), "a new or empty folder, or one that bg2vec encode-corpus wrote",
                          fix=f"it holds {found}; pick another folder")


def _check_same_run(manifest: Manifest, settings: dict[str, Any], inputs: list[dict[str, Any]]) -> None:
    """Refuse to resume with other settings or changed inputs, naming each difference."""
    recorded = manifest.data["settings"]
    changed = [f"{key} ({recorded.get(key)!r} then, {value!r} now)" for key, value in settings.items() if recorded.get(key) != value]
    if changed:
        first = next(key for key, value in settings.items() if recorded.get(key) != value)
        raise ConfigError(first, settings[first], f"the settings of the run recorded in {manifest.folder / MANIFEST_FILE}",
                          fix="changed since: " + "; ".join(changed) + ". Repeat them to resume, or pass --overwrite to start over")
    then = [{k: r[k] for k in ("path", "format", "size", "mtime_ns")} for r in manifest.data["inputs"]]
    if then != inputs:
        paths_then, paths_now = [r["path"] for r in then], [r["path"] for r in inputs]
        if paths_then != paths_now:
            what = f"the input files differ ({len(paths_then)} then, {len(paths_now)} now; first difference: " + next(
                (f"{a} / {b}" for a, b in zip(paths_then + [None], paths_now + [None]) if a != b)) + ")"
        else:
            a, b = next((a, b) for a, b in zip(then, inputs) if a != b)
            what = f"{a['path']} changed (size {a['size']} → {b['size']}, modified {a['mtime_ns']} → {b['mtime_ns']} ns)"
        raise ConfigError("inputs", [r["path"] for r in inputs], "the inputs of the recorded run, unchanged",
                          fix=f"{what}; pass --overwrite to start over")


def _clear(output: Path) -> None:
    """Remove what an earlier run wrote (its shards, manifest and temporary files), nothing else."""
    if not output.is_dir():
        return
    for pattern in ("shard-*.parquet", MANIFEST_FILE, "*" + PARTIAL_SUFFIX, ".*" + PARTIAL_SUFFIX):
        for path in output.glob(pattern):
            path.unlink()
    cache = output / ".cache"
    if cache.is_dir():
        shutil.rmtree(cache)


def _provenance(config: EncodeCorpusConfig, plan: ModelPlan, settings: dict[str, Any]) -> dict[str, Any]:
    """What made the vectors: the model (reference, digest, layout), the encoder settings in effect, the
    instruction, dims, dtype and normalization, and the bg2vec version (without loading the model)."""
    from transformers import AutoConfig

    from ..encoding.encoder import settings_for

    model_config = AutoConfig.from_pretrained(plan.weights)
    encoder = settings_for(plan, config.pooling_mode, config.max_length).within(
        getattr(model_config, "max_position_embeddings", None))  # as from_plan will load it
    hidden = model_config.hidden_size
    dims = config.dim or hidden
    if dims > hidden:
        raise ConfigError("dim", config.dim, f"a whole number from 1 to the model's embedding size {hidden}")
    return {
        "model": config.model_name_or_path,
        "adapter": config.adapter,
        "model_digest": settings["model_digest"],
        "model_layout": plan.layout,
        "base_model": plan.base_reference or plan.weights,
        "bidirectional": plan.settings.get("bidirectional", True),
        **asdict(encoder),
        "instruction": config.instruction,
        "instruction_column": config.instruction_column,
        "dims": dims,
        "model_dims": hidden,
        "dtype": config.dtype,
        "stored_width": stored_width(config.dtype, dims),
        "int8_scale": "per row: value = embedding * scale (column scale)" if config.dtype == "int8" else None,
        "binary_bits": "sign bits (value > 0), numpy.packbits order (big-endian)" if config.dtype == "binary" else None,
        "normalized": config.normalize,
        "torch_dtype": config.torch_dtype,
        "bg2vec_version": __version__,
    }


def _devices(device: str | None) -> str | list[str] | None:
    """`cuda:0,cuda:1` → a list (a worker process each); one name stays one device."""
    if device is None or "," not in device:
        return device
    return [d.strip() for d in device.split(",") if d.strip()]
