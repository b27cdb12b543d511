"""`bg2vec serve` operations against a real process: the API key, 429 under a flood, a disconnected client's
request dropped before the model, --truncate, metrics, SIGTERM finishing in-flight requests, and start-up
failures (one line, exit 2)."""

from __future__ import annotations

import concurrent.futures
import re
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from bg2vec import Bg2Vec
from bg2vec.cli import EXIT_BAD_INPUT, main
from serve_process import ServerProcess, free_port

KEY = "test-key-4f1c9e"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_WAIT_MS = 400  # long enough that a request is still queued when a test acts on it


@pytest.fixture(scope="module")
def encoder(tiny_model_dirs) -> Bg2Vec:
    return Bg2Vec.from_pretrained(str(tiny_model_dirs["llama"]), torch_dtype="float32")


@pytest.fixture(scope="module")
def server(tiny_model_dirs, tmp_path_factory):
    process = ServerProcess(tiny_model_dirs["llama"], "--api-key", KEY, "--max-queued-requests", "2", "--max-wait-ms",
                            str(MAX_WAIT_MS), "--truncate", log=tmp_path_factory.mktemp("serve") / "server.log")
    yield process
    process.stop()


def embed(server, payload, headers=AUTH) -> httpx.Response:
    return httpx.post(server.url + "/v1/embeddings", json=payload, headers=headers, timeout=60)


def metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_the_api_key_is_required_except_for_health_and_the_page(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        response = embed(server, {"input": "a"}, headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/").status_code == 200
    assert embed(server, {"input": "a"}).status_code == 200
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    assert len(client.embeddings.create(model=str(server_model(server)), input=["a", "b"]).data) == 2
    assert KEY not in server.log()


def server_model(server) -> str:
    return httpx.get(server.url + "/v1/models", headers=AUTH).json()["data"][0]["id"]


def test_truncate_cuts_long_inputs_as_encode_does(server, encoder):
    long_text = "дума " * 600  # more tokens than doc_max_length (400)
    body = embed(server, {"input": [long_text, "short"]}).json()
    expected = encoder.encode([long_text, "short"], normalize_embeddings=True)
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected, atol=1e-5)
    assert body["usage"]["prompt_tokens"] == sum(encoder.count_tokens([long_text, "short"]))


def test_a_flood_on_a_small_queue_gets_429_with_retry_after(server):
    before = metric(server, "bg2vec_rejected_requests_total")
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda i: embed(server, {"input": f"text {i}"}), range(20)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429} and statuses.count(429) >= 10, statuses
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "queue_full"
    assert metric(server, "bg2vec_rejected_requests_total") == before + statuses.count(429)
    assert embed(server, {"input": "after the flood"}).status_code == 200


def test_a_request_whose_client_left_never_reaches_the_model(server):
    tokens_before = metric(server, "bg2vec_embedded_tokens_total")
    dropped_before = metric(server, "bg2vec_dropped_requests_total")
    body = b'{"input": ["nobody waits for this text"]}'
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        time.sleep(0.1)  # queued: the batch waits MAX_WAIT_MS for company
    time.sleep(MAX_WAIT_MS / 1000 + 0.5)
    assert metric(server, "bg2vec_dropped_requests_total") == dropped_before + 1
    assert metric(server, "bg2vec_embedded_tokens_total") == tokens_before


def test_metrics_count_requests_batches_and_latency(server):
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert re.search(r'^bg2vec_requests_total\{route="/v1/embeddings",status="200"\} [1-9]', text, re.MULTILINE)
    assert re.search(r'^bg2vec_requests_total\{route="/v1/embeddings",status="401"\} 4$', text, re.MULTILINE)
    assert re.search(r'^bg2vec_request_duration_seconds_count\{route="/v1/embeddings"\} [1-9]', text, re.MULTILINE)
    assert re.search(r'^bg2vec_batch_rows_bucket\{le="\+Inf"\} [1-9]', text, re.MULTILINE)
    assert re.search(r"^bg2vec_queue_requests 0$", text, re.MULTILINE)
    assert metric(server, "bg2vec_tokens_per_second") > 0
    assert "# TYPE bg2vec_request_duration_seconds histogram" in text


def test_sigterm_answers_the_requests_in_flight_then_exits(server, encoder):
    texts = ["one in flight", "another one in flight"]
    answers: list = []
    threads = [threading.Thread(target=lambda t=t: answers.append((t, embed(server, {"input": t})))) for t in texts]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while metric(server, "bg2vec_queue_requests") < 2:  # both queued: the batch waits MAX_WAIT_MS for company
        assert time.monotonic() < deadline, "the two requests never were in the queue together"
        time.sleep(0.01)
    server.process.terminate()
    for thread in threads:
        thread.join(timeout=60)
    assert server.process.wait(timeout=60) == 0, server.log()
    assert sorted(r.status_code for _, r in answers) == [200, 200]
    for text, response in answers:
        np.testing.assert_allclose(response.json()["data"][0]["embedding"],
                                   encoder.encode([text], normalize_embeddings=True)[0], atol=1e-5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health")


# --- start-up failures: one line, exit 2, nothing listening ----------------------------------------------

def test_a_port_in_use_fails_before_the_model_loads(tiny_model_dirs, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(tiny_model_dirs["llama"]), "--port", str(port)]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"port={port}" in error and "in use" in error


@pytest.mark.parametrize("host", ["203.0.113.7", "no-such-host.invalid"])
def test_a_host_that_cannot_be_bound_fails_in_one_line(tiny_model_dirs, capsys, host):
    assert main(["serve", "--model", str(tiny_model_dirs["llama"]), "--host", host, "--port", str(free_port())]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"host='{host}'" in error


def test_a_model_that_does_not_load_fails_in_one_line_and_frees_the_port(tmp_path, capsys):
    port = free_port()
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", str(port)]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "model=" in error
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # released: nothing kept it


def test_bad_settings_fail_in_one_line(tiny_model_dirs, tmp_path, capsys):
    model = str(tiny_model_dirs["llama"])
    assert main(["serve", "--model", model, "--max-batch-tokens", "0"]) == EXIT_BAD_INPUT
    assert "max_batch_tokens=0" in capsys.readouterr().err
    config = tmp_path / "serve.json"
    config.write_text('{"model_name_or_path": "%s", "max_wait": 3}' % model)
    assert main(["serve", str(config)]) == EXIT_BAD_INPUT
    assert "max_wait" in capsys.readouterr().err


def test_the_api_key_can_come_from_the_environment(monkeypatch):
    from bg2vec.config import ServeConfig

    monkeypatch.setenv("BG2VEC_API_KEY", "from-env")
    assert ServeConfig(model_name_or_path="m").api_key == "from-env"
    assert ServeConfig(model_name_or_path="m", api_key="given").api_key == "given"
    monkeypatch.setenv("BG2VEC_API_KEY", "")
    assert ServeConfig(model_name_or_path="m").api_key is None
