"""The MTEB 2.x wrapper, run offline on mteb's own mock tasks."""

from __future__ import annotations

import mteb
from mteb.mocks.mock_tasks import MockRetrievalTask, MockSTSTask
from mteb.models.models_protocols import EncoderProtocol

from bg2vec import Bg2Vec

from bg2vec.evaluation.mteb_model import Bg2VecMTEB, llm2vec_instruction  # noqa: E402


def test_mteb_evaluates_a_bg2vec_model_on_mock_tasks(tiny_model_dirs):
    encoder = Bg2Vec.from_pretrained(str(tiny_model_dirs["qwen2"]), torch_dtype="float32")
    model = Bg2VecMTEB(encoder)
    assert isinstance(model, EncoderProtocol)
    meta = model.mteb_model_meta
    assert meta.name == f"bg2vec/{tiny_model_dirs['qwen2'].name}" and meta.embed_dim == 64 and meta.max_tokens == 512
    results = mteb.evaluate(model, [MockSTSTask(), MockRetrievalTask()], cache=None, show_progress_bar=False)
    scores = {result.task_name: result.get_score() for result in results.task_results}
    assert set(scores) == {"MockSTSTask", "MockRetrievalTask"}
    assert all(-1.0 <= score <= 1.0 for score in scores.values())


def test_instructions_follow_mtebs_llm2vec_convention():
    assert llm2vec_instruction("Retrieve passages that answer the question.") == "Retrieve passages that answer the question:"
    assert llm2vec_instruction("Classify the sentiment:") == "Classify the sentiment:"
    assert llm2vec_instruction("") == ""
