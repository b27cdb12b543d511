"""`bg2vec serve` against a real server process: the OpenAI contract (official client and raw HTTP), a fuzz of
malformed requests, instructions pooled as `encode` pools them, batch invariance, rerank, and the page in
headless Chromium. Every vector is compared with `Bg2Vec.encode` of the same input."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import tempfile
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from bg2vec import Bg2Vec
from serve_process import ServerProcess

from conftest import REPO

QUERY_INSTRUCTION = "Retrieve semantically similar text:"
TEXTS = ["София е столицата на България.", "The quick brown fox jumps over the lazy dog.", "Пловдив е стар град."]
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def encoder(tiny_model_dirs) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(tiny_model_dirs["mistral"]), torch_dtype="float32")


@pytest.fixture(scope="module")
def server(tiny_model_dirs, tmp_path_factory):
    # two copies of the model ("devices") behind one queue: every vector must still equal encode's
    process = ServerProcess(tiny_model_dirs["mistral"], "--served-model-name", "tiny", "--query-instruction",
                            QUERY_INSTRUCTION, "--max-wait-ms", "20", "--device", "cpu,cpu",
                            log=tmp_path_factory.mktemp("serve") / "server.log")
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def reference(encoder: Bg2Vec, sentences: list, dim: int | None = None) -> np.ndarray:
    return encoder.encode(sentences, normalize_embeddings=True, dim=dim)


def post(server, path: str, payload, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, json=payload, timeout=60, **kwargs)


# --- the official openai client -----------------------------------------------------------------------

def test_openai_client_default_base64_equals_encode(client, encoder):
    response = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64 by default
    np.testing.assert_allclose([d.embedding for d in response.data], reference(encoder, TEXTS), atol=1e-5)
    assert [d.index for d in response.data] == [0, 1, 2]
    assert response.model == "tiny"
    tokens = sum(encoder.count_tokens(TEXTS))
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_openai_client_float_dimensions_and_single_string(client, encoder):
    floats = client.embeddings.create(model="tiny", input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, reference(encoder, TEXTS[:1])[0], atol=1e-5)
    short = client.embeddings.create(model="tiny", input=TEXTS, dimensions=16)
    vectors = np.array([d.embedding for d in short.data])
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(vectors, reference(encoder, TEXTS, dim=16), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # re-normalized


def test_openai_client_token_ids_equal_the_text(client, encoder):
    ids = [encoder.tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    response = client.embeddings.create(model="tiny", input=ids)
    np.testing.assert_allclose([d.embedding for d in response.data], reference(encoder, TEXTS), atol=1e-5)
    one = client.embeddings.create(model="tiny", input=ids[1], encoding_format="float")  # one list of ids
    np.testing.assert_allclose(one.data[0].embedding, reference(encoder, TEXTS[1:2])[0], atol=1e-5)


def test_openai_client_sees_errors_as_api_errors(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.embeddings.create(model="other", input="x")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="tiny", input="x", dimensions=65)


# --- raw HTTP: every field -------------------------------------------------------------------------------

def test_base64_is_little_endian_float32(server, encoder):
    body = post(server, "/v1/embeddings", {"input": TEXTS, "encoding_format": "base64", "user": "someone"}).json()
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    np.testing.assert_allclose(rows, reference(encoder, TEXTS), atol=1e-5)
    assert body["object"] == "list" and {d["object"] for d in body["data"]} == {"embedding"}


def test_instruction_attends_but_is_not_pooled(server, encoder):
    instruction = "Find the capital:"
    body = post(server, "/v1/embeddings", {"input": TEXTS, "instruction": instruction}).json()
    vectors = [d["embedding"] for d in body["data"]]
    np.testing.assert_allclose(vectors, reference(encoder, [[instruction, t] for t in TEXTS]), atol=1e-5)
    assert not np.allclose(vectors, reference(encoder, TEXTS), atol=1e-3)  # the instruction changed the vectors
    tokens = sum(encoder.count_tokens([[instruction, t] for t in TEXTS]))
    assert body["usage"]["prompt_tokens"] == tokens


def test_input_type_maps_to_the_servers_instructions(server, encoder):
    query = post(server, "/v1/embeddings", {"input": TEXTS, "input_type": "query"}).json()
    np.testing.assert_allclose([d["embedding"] for d in query["data"]],
                               reference(encoder, [[QUERY_INSTRUCTION, t] for t in TEXTS]), atol=1e-5)
    document = post(server, "/v1/embeddings", {"input": TEXTS, "input_type": "document"}).json()  # none given
    np.testing.assert_allclose([d["embedding"] for d in document["data"]], reference(encoder, TEXTS), atol=1e-5)


def test_normalize_false_returns_encode_as_is(server, encoder):
    body = post(server, "/v1/embeddings", {"input": TEXTS, "normalize": False}).json()
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], encoder.encode(TEXTS), atol=1e-5)


def test_models_health_and_description(server):
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    info = models["data"][0]["bg2vec"]
    assert info["dimensions"] == 64 and info["pooling_mode"] == "mean" and info["query_instruction"] == QUERY_INSTRUCTION
    assert info["stages"] == [info["base_model"]]  # a plain base: no adapter applied
    assert info["devices"] == ["cpu", "cpu"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/models").json() == models  # OpenAI paths without /v1 too


def test_rerank_sorts_documents_by_cosine_with_the_query(server, encoder):
    query, documents = "Коя е столицата?", TEXTS
    body = post(server, "/v1/rerank", {"query": query, "documents": documents, "top_n": 2, "return_documents": True}).json()
    vectors = reference(encoder, [[QUERY_INSTRUCTION, query]] + documents)
    cosines = vectors[1:] @ vectors[0]
    expected = np.argsort(-cosines)[:2]
    assert [r["index"] for r in body["results"]] == expected.tolist()
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], cosines[expected], atol=1e-5)
    assert [r["document"]["text"] for r in body["results"]] == [documents[i] for i in expected]
    objects = post(server, "/v1/rerank", {"query": query, "documents": [{"text": t} for t in documents]}).json()
    assert len(objects["results"]) == 3 and "document" not in objects["results"][0]


# --- batch invariance ------------------------------------------------------------------------------------

def test_a_text_alone_or_among_63_others_gets_the_same_vector(server, encoder):
    rng = np.random.default_rng(0)
    words = " ".join(TEXTS).split()
    others = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(63)]
    target = TEXTS[0]
    alone = post(server, "/v1/embeddings", {"input": [target]}).json()["data"][0]["embedding"]
    among = post(server, "/v1/embeddings", {"input": others[:20] + [target] + others[20:]}).json()["data"][20]["embedding"]
    np.testing.assert_allclose(alone, among, atol=1e-5)
    np.testing.assert_allclose(alone, reference(encoder, [target])[0], atol=1e-5)
    # 64 concurrent requests are merged into shared batches by the queue: still the same vectors
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda text: post(server, "/v1/embeddings", {"input": text}).json(), [target] + others))
    vectors = np.array([a["data"][0]["embedding"] for a in answers])
    np.testing.assert_allclose(vectors, reference(encoder, [target] + others), atol=1e-5)
    assert 'bg2vec_steps_total{worker="0"}' in httpx.get(server.url + "/metrics").text


# --- malformed requests ----------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}
FUZZ = {
    "input a number": (b'{"input": 5}', JSON),
    "input an object": (b'{"input": {"text": "a"}}', JSON),
    "input true": (b'{"input": true}', JSON),
    "input null": (b'{"input": null}', JSON),
    "no input": (b'{"model": "tiny"}', JSON),
    "empty list": (b'{"input": []}', JSON),
    "empty string": (b'{"input": ""}', JSON),
    "empty string in a list": (b'{"input": ["a", ""]}', JSON),
    "empty token list": (b'{"input": [[]]}', JSON),
    "10,000 inputs": (json.dumps({"input": ["a"] * 10_000}).encode(), JSON),
    "a 1 MB input": (json.dumps({"input": "слово " * 90_000}, ensure_ascii=False).encode(), JSON),
    "strings and token lists": (b'{"input": ["a", [1, 2]]}', JSON),
    "ids and strings": (b'{"input": [1, "a"]}', JSON),
    "nested token lists": (b'{"input": [[1, [2]]]}', JSON),
    "a string inside token lists": (b'{"input": [["a", 1]]}', JSON),
    "float token id": (b'{"input": [[1.5]]}', JSON),
    "negative token id": (b'{"input": [[-1]]}', JSON),
    "token id past the vocabulary": (b'{"input": [[1000000]]}', JSON),
    "null in the list": (b'{"input": ["a", null]}', JSON),
    "unknown field": (b'{"input": "a", "temperature": 0.5}', JSON),
    "model a number": (b'{"input": "a", "model": 5}', JSON),
    "unknown model": (b'{"input": "a", "model": "gpt-4"}', JSON),
    "bad encoding_format": (b'{"input": "a", "encoding_format": "int8"}', JSON),
    "encoding_format a number": (b'{"input": "a", "encoding_format": 1}', JSON),
    "dimensions 0": (b'{"input": "a", "dimensions": 0}', JSON),
    "dimensions negative": (b'{"input": "a", "dimensions": -3}', JSON),
    "dimensions too large": (b'{"input": "a", "dimensions": 65}', JSON),
    "dimensions a string": (b'{"input": "a", "dimensions": "8"}', JSON),
    "dimensions a float": (b'{"input": "a", "dimensions": 8.5}', JSON),
    "dimensions true": (b'{"input": "a", "dimensions": true}', JSON),
    "bad input_type": (b'{"input": "a", "input_type": "passage"}', JSON),
    "instruction and input_type": (b'{"input": "a", "instruction": "x", "input_type": "query"}', JSON),
    "instruction a list": (b'{"input": "a", "instruction": ["x"]}', JSON),
    "normalize a string": (b'{"input": "a", "normalize": "yes"}', JSON),
    "user a list": (b'{"input": "a", "user": []}', JSON),
    "invalid JSON": (b'{"input": ', JSON),
    "empty body": (b"", JSON),
    "not UTF-8": (b'{"input": "\xff\xfe"}', JSON),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, JSON),
    "a JSON list": (b'["a", "b"]', JSON),
    "a JSON string": (b'"a"', JSON),
    "JSON null": (b"null", JSON),
    "text/plain": (b'{"input": "a"}', {"content-type": "text/plain"}),
    "no content type": (b'{"input": "a"}', {}),
    "a form": (b"input=a", {"content-type": "application/x-www-form-urlencoded"}),
    "a 3 MB body": (json.dumps({"input": ["слово"] * 300_000}).encode(), JSON),
}
EXPECTED_STATUS = {"unknown model": 404, "text/plain": 415, "no content type": 415, "a form": 415, "a 3 MB body": 413}
RERANK_FUZZ = [{}, {"query": "", "documents": ["a"]}, {"query": "a", "documents": []}, {"query": "a", "documents": [1]},
               {"query": "a", "documents": [{"title": "a"}]}, {"query": "a", "documents": ["b"], "top_n": 0},
               {"query": "a", "documents": ["b"], "return_documents": "yes"}, {"query": ["a"], "documents": ["b"]},
               {"query": "a", "documents": ["b"], "rank_fields": ["x"]}]


def test_every_malformed_request_gets_a_4xx_openai_error_and_the_server_goes_on(server):
    for name, (content, headers) in FUZZ.items():
        response = httpx.post(server.url + "/v1/embeddings", content=content, headers=headers, timeout=60)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:200])
        assert response.status_code == EXPECTED_STATUS.get(name, 400), (name, response.status_code)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], name
    for payload in RERANK_FUZZ:
        response = post(server, "/v1/rerank", payload)
        assert response.status_code == 400 and response.json()["error"]["message"], payload
    for method, path, status in (("GET", "/v1/embeddings", 405), ("GET", "/nowhere", 404), ("DELETE", "/v1/models", 405)):
        response = httpx.request(method, server.url + path)
        assert response.status_code == status and "error" in response.json(), (method, path)
    assert post(server, "/v1/embeddings", {"input": "still here"}).status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200


def test_errors_name_the_field(server):
    error = post(server, "/v1/embeddings", {"input": ["a", ""]}).json()["error"]
    assert error["param"] == "input[1]" and error["type"] == "invalid_request_error"
    too_long = post(server, "/v1/embeddings", {"input": ["a", "дума " * 600]}).json()["error"]
    assert too_long["code"] == "context_length_exceeded" and "--truncate" in too_long["message"]
    assert post(server, "/v1/embeddings", {"input": ["a"] * 2049}).json()["error"]["code"] == "too_many_inputs"


# --- the page --------------------------------------------------------------------------------------------

def test_the_page_ranks_texts_in_a_headless_browser(server, encoder, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=900,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='bg2vec-chromium-')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "tiny" in d.find_element(By.ID, "model").text)
        assert "mean" in driver.find_element(By.ID, "model").text
        source, others, instruction = "Столицата на България", TEXTS, "Find the city:"
        for element_id, value in (("source", source), ("others", "\n".join(others)), ("instruction", instruction)):
            field = driver.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.ID, "compute").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) == len(others))
        rows = driver.find_elements(By.CSS_SELECTOR, "#results li.result")
        shown = [(float(r.find_element(By.CLASS_NAME, "score").text), r.find_element(By.CLASS_NAME, "text").text) for r in rows]
        vectors = reference(encoder, [[instruction, source]] + others)
        cosines = vectors[1:] @ vectors[0]
        assert [text for _, text in shown] == [others[i] for i in np.argsort(-cosines)]
        np.testing.assert_allclose([score for score, _ in shown], np.sort(cosines)[::-1], atol=1e-4)
        assert driver.find_element(By.ID, "error").text == ""
        # The docs' picture is refreshed on request only (BG2VEC_UPDATE_DOCS=1), so a test run changes no tracked file.
        shot = DOCS / "serve-page.png" if os.environ.get("BG2VEC_UPDATE_DOCS") else tmp_path / "serve-page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
