"""`bg2vec export` checked runtime by runtime: each folder is loaded by the runtime itself (sentence-transformers,
ONNX Runtime, llama.cpp through llama-cpp-python) and must give `Bg2Vec.encode`'s vectors on the parity set
(cosine >= 0.999) as a batch of all and one by one, and attend both ways when run there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bg2vec import Bg2Vec
from bg2vec.cli import main
from bg2vec.exports import export_model, load_encoder
from bg2vec.exports.parity import PARITY_SET, cosines, joined

PLAIN = [s for s in PARITY_SET if isinstance(s, str)]
INSTRUCTED = [s for s in PARITY_SET if not isinstance(s, str)]
PROMPTS = {f"i{n}": pair[0] for n, pair in enumerate(INSTRUCTED)}
# The last token differs; every earlier token is the same (checked below on the tokenizer).
PROBE = ("София е столицата на България и най-големият град в страната.", "София е столицата на България и най-големият град в страната!")


@pytest.fixture(scope="module")
def encoders(tiny_model_dirs) -> dict[str, Bg2Vec]:
    return {name: Bg2Vec.from_pretrained(str(folder), torch_dtype="float32") for name, folder in tiny_model_dirs.items()}


def bg2vec_token_states(encoder: Bg2Vec, text: str) -> torch.Tensor:
    """(T, H) last hidden states of one text in bg2vec's own forward pass."""
    features = encoder.tokenize([text])
    with torch.inference_mode():
        out = encoder.model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                            position_ids=features["position_ids"], use_cache=False)
    return out.last_hidden_state[0].float()


def assert_same_bidirectional_change(encoder: Bg2Vec, runtime_states) -> None:
    """Changing the last token moves the first text token's state, in the runtime as in bg2vec."""
    ids = [encoder.tokenizer(t)["input_ids"] for t in PROBE]
    assert ids[0][:-1] == ids[1][:-1] and ids[0][-1] != ids[1][-1], "the probe differs in its last token only"
    expected = bg2vec_token_states(encoder, PROBE[1])[1] - bg2vec_token_states(encoder, PROBE[0])[1]  # (H,)
    first, second = (np.asarray(runtime_states(t))[1] for t in PROBE)
    change = second - first
    assert np.abs(change).max() > 1e-4, "the runtime's earlier token did not see the later one: causal attention"
    assert cosines(change[None], expected.numpy()[None])[0] >= 0.99


# --- sentence-transformers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["mistral", "gemma3_text"])
def test_sentence_transformers_parity_and_bidirectionality(encoders, tmp_path, family):
    import sentence_transformers

    encoder = encoders[family]
    export_model(encoder, "sentence-transformers", tmp_path / "st", prompts=PROMPTS)
    model = sentence_transformers.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    expected = encoder.encode(PLAIN)
    assert cosines(model.encode(PLAIN, batch_size=len(PLAIN)), expected).min() >= 0.999
    assert cosines(np.concatenate([model.encode([t]) for t in PLAIN]), expected).min() >= 0.999
    # an instruction is a prompt left out of the pooling (include_prompt false), as bg2vec leaves it out
    instructed = np.concatenate([model.encode([text], prompt_name=f"i{n}") for n, (_, text) in enumerate(INSTRUCTED)])
    assert cosines(instructed, encoder.encode(INSTRUCTED)).min() >= 0.999
    assert_same_bidirectional_change(encoder, lambda t: model.encode([t], output_value="token_embeddings")[0].numpy())


# --- ONNX Runtime ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_folder(encoders, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "llama-onnx"
    export_model(encoders["llama"], "onnx", folder, prompts=PROMPTS)
    return folder


def test_onnx_fp32_parity_int8_figure_and_encoder_api(encoders, onnx_folder):
    encoder = encoders["llama"]
    expected = encoder.encode(PARITY_SET)
    onnx = load_encoder(str(onnx_folder), backend="onnx")
    assert cosines(onnx.encode(PARITY_SET, batch_size=len(PARITY_SET)), expected).min() >= 0.999
    assert cosines(np.concatenate([onnx.encode([s]) for s in PARITY_SET]), expected).min() >= 0.999
    assert onnx.count_tokens(PARITY_SET) == [len(i.input_ids) for i in encoder.build_inputs(PARITY_SET)]
    order = onnx.embed_inputs(onnx.build_inputs(PARITY_SET[::-1]), batch_size=3)  # (N, H) tensor, input order
    assert isinstance(order, torch.Tensor) and cosines(order.numpy()[::-1], expected).min() >= 0.999
    int8 = cosines(load_encoder(str(onnx_folder), backend="onnx", variant="int8").encode(PARITY_SET), expected)
    print(f"ONNX int8 parity: min cosine {int8.min():.4f}, mean {int8.mean():.4f}")
    assert int8.min() >= 0.95, "dynamic int8 keeps the vectors' direction"
    record = json.loads((onnx_folder / "bg2vec_export.json").read_text())
    assert record["instructions"] == PROMPTS and record["instructions_pooled_by_runtime"] is False


def test_onnx_graph_attends_both_ways(encoders, onnx_folder):
    import onnxruntime

    encoder = encoders["llama"]
    session = onnxruntime.InferenceSession(str(onnx_folder / "model.onnx"))

    def states(text: str) -> np.ndarray:
        features = encoder.tokenize([text])
        feed = {k: features[k].numpy() for k in ("input_ids", "attention_mask", "pooling_mask")}
        return session.run(["last_hidden_state"], feed)[0][0]  # (T, H)

    assert_same_bidirectional_change(encoder, states)


def test_bg2vec_serve_runs_the_onnx_export(encoders, onnx_folder, tmp_path):
    """`bg2vec serve --backend onnx` answers the OpenAI contract with the ONNX model's vectors (= encode, 0.999)."""
    import httpx

    from bg2vec.errors import ConfigError
    from serve_process import ServerProcess

    with pytest.raises(ConfigError, match="--backend"):
        load_encoder(str(onnx_folder), backend="tensorrt")
    with pytest.raises(ConfigError, match="variant"):
        load_encoder(str(onnx_folder), backend="onnx", variant="int4")
    server = ServerProcess(onnx_folder, "--backend", "onnx", log=tmp_path / "serve.log")
    try:
        texts = [text for text in PARITY_SET if isinstance(text, str)][:4]
        reply = httpx.post(server.url + "/v1/embeddings", json={"input": texts, "encoding_format": "float"}, timeout=60)
        assert reply.status_code == 200, reply.text
        served = np.array([row["embedding"] for row in reply.json()["data"]], dtype=np.float32)
        assert cosines(served, encoders["llama"].encode(texts)).min() >= 0.999
        assert reply.json()["usage"]["prompt_tokens"] == sum(encoders["llama"].count_tokens(texts))
    finally:
        assert server.stop() == 0


# --- TEI and vLLM: written (run on a GPU by benchmarks/gpu_check.py) ----------------------------------------

@pytest.mark.parametrize("target, family, expected", [
    ("tei", "qwen2", {"is_causal": False}),
    ("tei", "gemma3_text", {"is_causal": False, "use_bidirectional_attention": True, "sliding_window": 14}),
    ("vllm", "mistral", {"architectures": ["LlamaBidirectionalModel"], "pooling": "avg", "is_causal": False}),
])
def test_server_folders_carry_the_switch_their_runtime_reads(encoders, tmp_path, target, family, expected):
    result = export_model(encoders[family], target, tmp_path / target, prompts=PROMPTS)
    config = json.loads((tmp_path / target / "config.json").read_text())
    assert {k: config[k] for k in expected} == expected
    assert json.loads((tmp_path / target / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "mean"
    card = (tmp_path / target / "README.md").read_text()
    assert "written, not yet run" in card and "pooled here" in card
    figure = json.loads((tmp_path / target / "bg2vec_export.json").read_text())["runtime"]["parity_all_tokens_pooled_min_cosine"]
    assert 0 < figure < 1 and any("cosine" in note for note in result.notes)
    # the torch side of what the server computes: the same model pooling every token of the joined input
    reloaded = Bg2Vec.from_pretrained(str(tmp_path / target), torch_dtype="float32", skip_instruction=False)
    assert np.isclose(cosines(encoders[family].encode(PARITY_SET), reloaded.encode(joined(PARITY_SET))).min(), figure, atol=1e-4)


# --- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, named", [
    (["--to", "tensorrt"], "--to"),
    (["--to", "gguf", "--gguf-type", "q4_k"], "--gguf-type"),
    (["--to", "gguf", "--instruction", "no-equals-sign"], "--instruction"),
])
def test_bad_export_arguments_are_one_line_and_write_nothing(tiny_model_dirs, tmp_path, capsys, arguments, named):
    output = tmp_path / "out"
    assert main(["export", "--model", str(tiny_model_dirs["llama"]), "--output", str(output), *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err
    assert not output.exists()


def test_output_inside_or_around_the_model_is_refused(tiny_model_dirs, capsys):
    model = tiny_model_dirs["llama"]
    assert main(["export", "--model", str(model), "--to", "onnx", "--output", str(model / "onnx")]) == 2
    assert "inside nor around --model" in capsys.readouterr().err and not (model / "onnx").exists()
    assert main(["export", "--model", str(model), "--to", "onnx", "--output", str(model.parent), "--overwrite"]) == 2
    assert (model / "config.json").exists(), "the model's folder is never replaced"


def test_a_model_the_target_cannot_represent_is_refused(tiny_model_dirs, tmp_path):
    """weighted_mean pooling has no llama.cpp equivalent: exit 2, one line, nothing written (run as users do)."""
    folder = tmp_path / "weighted"
    shutil.copytree(tiny_model_dirs["llama"], folder)
    (folder / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "weighted_mean"}))
    output = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "bg2vec.cli", "export", "--model", str(folder), "--to", "gguf",
                           "--output", str(output)], capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if line.startswith("bg2vec export")]  # below transformers' load bar
    assert done.returncode == 2 and len(errors) == 1 and "weighted_mean" in errors[0] and "llama.cpp" in errors[0]
    assert not output.exists() and not list(tmp_path.glob(".out-*"))
