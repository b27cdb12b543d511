"""Request schemas of the server: OpenAI's `/v1/embeddings` and the Cohere/Jina `/v1/rerank`, checked by hand.

Every check raises `ApiError`, which the app answers in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`), so no malformed request reaches the model or becomes a 500.
The limits (inputs per request, body bytes) are the server's settings; token limits need the tokenizer and are
checked in `app.py` once the inputs are tokenized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ENCODING_FORMATS = ("float", "base64")
INPUT_TYPES = ("query", "document")
EMBEDDING_FIELDS = {"input", "model", "encoding_format", "dimensions", "user", "instruction", "input_type", "normalize"}
RERANK_FIELDS = {"query", "documents", "model", "top_n", "return_documents", "instruction", "user"}

TextOrIds = str | list[int]  # one input: a text, or the token ids of a text


class ApiError(Exception):
    """A request the server refuses: HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class EmbeddingRequest:
    inputs: list[TextOrIds]
    model: str | None
    encoding_format: str  # float or base64 (little-endian float32)
    dimensions: int | None  # a Matryoshka prefix, re-normalized
    instruction: str | None  # attends, left out of the pooling (extension)
    input_type: str | None  # query or document: the server's instruction for that side (extension)
    normalize: bool  # L2-normalize (OpenAI's vectors are unit length; extension to turn it off)


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]
    model: str | None
    top_n: int | None
    return_documents: bool
    instruction: str | None  # for the query; the server's query instruction if None


def parse_embedding_request(payload: Any, max_inputs: int) -> EmbeddingRequest:
    """An `EmbeddingRequest` from a decoded JSON body, or `ApiError` naming the bad field."""
    body = _object(payload, EMBEDDING_FIELDS)
    if "input" not in body:
        raise ApiError(400, "'input' is a required property", "input", "missing_required_parameter")
    inputs = _inputs(body["input"], max_inputs)
    encoding_format = body.get("encoding_format", "float")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise ApiError(400, f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}, got {_short(encoding_format)}",
                       "encoding_format", "invalid_value")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise ApiError(400, f"'dimensions' must be a positive integer, got {_short(dimensions)}", "dimensions", "invalid_value")
    input_type = body.get("input_type")
    if input_type is not None and input_type not in INPUT_TYPES:
        raise ApiError(400, f"'input_type' must be one of {', '.join(INPUT_TYPES)}, got {_short(input_type)}",
                       "input_type", "invalid_value")
    instruction = _optional_str(body, "instruction")
    if instruction and input_type is not None:
        raise ApiError(400, "give 'instruction' or 'input_type', not both", "instruction", "invalid_value")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ApiError(400, f"'normalize' must be true or false, got {_short(normalize)}", "normalize", "invalid_type")
    _optional_str(body, "user")
    return EmbeddingRequest(inputs, _optional_str(body, "model"), encoding_format, dimensions, instruction or None,
                            input_type, normalize)


def parse_rerank_request(payload: Any, max_inputs: int) -> RerankRequest:
    """A `RerankRequest` from a decoded JSON body: documents as strings or `{"text": ...}` objects."""
    body = _object(payload, RERANK_FIELDS)
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise ApiError(400, "'query' must be a non-empty string", "query", "invalid_value")
    raw = body.get("documents")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'documents' must be a non-empty list of strings", "documents", "invalid_value")
    if len(raw) > max_inputs:
        raise ApiError(400, f"'documents' has {len(raw)} items; at most {max_inputs} per request", "documents", "too_many_inputs")
    documents = []
    for i, doc in enumerate(raw):
        text = doc.get("text") if isinstance(doc, dict) else doc
        if not isinstance(text, str) or not text:
            raise ApiError(400, f"'documents[{i}]' must be a non-empty string or {{\"text\": string}}", f"documents[{i}]", "invalid_value")
        documents.append(text)
    top_n = body.get("top_n")
    if top_n is not None and (not _is_int(top_n) or top_n < 1):
        raise ApiError(400, f"'top_n' must be a positive integer, got {_short(top_n)}", "top_n", "invalid_value")
    return_documents = body.get("return_documents", False)
    if not isinstance(return_documents, bool):
        raise ApiError(400, "'return_documents' must be true or false", "return_documents", "invalid_type")
    _optional_str(body, "user")
    return RerankRequest(query, documents, _optional_str(body, "model"), top_n, return_documents,
                         _optional_str(body, "instruction") or None)


def _object(payload: Any, fields: set[str]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(payload).__name__}", None, "invalid_json")
    unknown = sorted(set(payload) - fields)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(_short(k) for k in unknown)}",
                       unknown[0][:100], "unknown_parameter")
    return payload


def _inputs(value: Any, max_inputs: int) -> list[TextOrIds]:
    """OpenAI's four input forms: a string, a list of strings, a list of token ids, a list of lists of token ids."""
    allowed = "a non-empty string, a list of them, a list of token ids, or a list of lists of token ids"
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(_is_int(v) for v in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise ApiError(400, f"'input' must be {allowed}", "input", "invalid_value")
    if len(items) > max_inputs:
        raise ApiError(400, f"'input' has {len(items)} items; at most {max_inputs} per request", "input", "too_many_inputs")
    kinds = {type(item) for item in items}
    if len(kinds) > 1:
        raise ApiError(400, f"'input' mixes strings and token lists; it must be {allowed}", "input", "invalid_type")
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise ApiError(400, f"'input[{i}]' is an empty string", f"input[{i}]", "invalid_value")
        elif isinstance(item, list):
            if not item or not all(_is_int(v) and v >= 0 for v in item):
                raise ApiError(400, f"'input[{i}]' must be a non-empty list of token ids (integers >= 0)", f"input[{i}]", "invalid_value")
        else:
            raise ApiError(400, f"'input[{i}]' is {type(item).__name__}; 'input' must be {allowed}", f"input[{i}]", "invalid_type")
    return items


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string, got {type(value).__name__}", name, "invalid_type")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
