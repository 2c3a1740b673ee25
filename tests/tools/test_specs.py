"""Store specs: every form parses to the adapter and typed options it names, prints back
canonically, and every bad spec is refused with a one-line InvalidInputError before any store
is opened or created."""

from __future__ import annotations

import os

import pytest

from memsys.domain.errors import InvalidInputError
from memsys.specs import StoreSpec, parse_named_spec, parse_spec

FORMS = [
    ("lmdb:/data/lmdb", "lmdb", "/data/lmdb", {}, None),
    ("duckdb:/data/items.duckdb?sync=false&query_timeout=2.5", "duckdb", "/data/items.duckdb",
     {"sync": False, "query_timeout": 2.5}, None),
    ("kuzu:/data/graph.kuzu?buffer_pool_size=64MiB", "kuzu", "/data/graph.kuzu", {"buffer_pool_size": 64 << 20}, None),
    ("tinydb:rel/items.json?sync=0&compact_bytes=1_000", "tinydb", "rel/items.json",
     {"sync": False, "compact_bytes": 1000}, None),
    ("networkx:/data/graph", "networkx", "/data/graph", {}, None),
    ("faiss:/data/faiss?dimension=384&index=hnsw", "faiss", "/data/faiss", {"dimension": 384, "index": "hnsw"}, None),
    ("chroma:/data/chroma?collection=notes", "chroma", "/data/chroma", {"collection": "notes"}, None),
    ("chroma+http://localhost:8000?collection=notes&timeout=3", "chroma", None,
     {"collection": "notes", "timeout": 3.0}, "http://localhost:8000"),
    ("chroma+https://chroma.example.com:443", "chroma", None, {}, "https://chroma.example.com:443"),
    ("memsys.adapters.memory_store:InMemoryStore?path=/data/mem&dimension=8",
     "memsys.adapters.memory_store:InMemoryStore", "/data/mem", {"dimension": 8}, None),
    ("memsys.adapters.memory_store:InMemoryStore", "memsys.adapters.memory_store:InMemoryStore", None, {}, None),
]


@pytest.mark.parametrize("text,backend,path,options,server", FORMS)
def test_every_form_parses_and_prints_back_canonically(text, backend, path, options, server) -> None:
    spec = parse_spec(text)
    assert (spec.backend, spec.path, dict(spec.options), spec.server) == (backend, path, options, server)
    assert spec.text == text
    assert all(type(spec.options[k]) is type(v) for k, v in options.items())  # typed, not strings
    assert parse_spec(str(spec)) == spec
    assert str(parse_spec(str(spec))) == str(spec)


def test_home_is_expanded_and_the_spec_names_a_default_store_name() -> None:
    assert parse_spec("tinydb:~/items.json").path == os.path.expanduser("~/items.json")
    assert parse_spec("lmdb:/x").name == "lmdb"
    assert parse_spec("memsys.adapters.memory_store:InMemoryStore").name == "inmemorystore"
    assert parse_named_spec("hot=lmdb:/x?sync=false") == ("hot", parse_spec("lmdb:/x?sync=false"))
    assert parse_named_spec("lmdb:/x?sync=false") == ("lmdb", parse_spec("lmdb:/x?sync=false"))


def test_open_builds_the_adapter_with_the_typed_options(tmp_path) -> None:
    store = parse_spec(f"lmdb:{tmp_path / 'lmdb'}?map_size=16MiB&sync=false").open()
    try:
        assert type(store).__name__ == "LMDBMemoryAdapter" and store.path == str(tmp_path / "lmdb")
        assert store.sync is False
    finally:
        store.close()
    vectors = parse_spec(f"faiss:{tmp_path / 'faiss'}?dimension=16&index=hnsw").open()
    try:
        assert (type(vectors).__name__, vectors.dimension) == ("FAISSVectorStore", 16)
    finally:
        vectors.close()
    third = parse_spec(f"memsys.adapters.memory_store:InMemoryStore?path={tmp_path / 'mem'}&dimension=8").open()
    try:
        assert (type(third).__name__, third.dimension, third.path) == ("InMemoryStore", 8, str(tmp_path / "mem"))
    finally:
        third.close()


def test_a_value_out_of_the_adapters_range_is_refused_at_open_and_creates_nothing(tmp_path) -> None:
    spec = parse_spec(f"faiss:{tmp_path / 'faiss'}?dimension=1")  # an int: the type is right
    with pytest.raises(InvalidInputError, match="dimension"):
        spec.open()
    assert not (tmp_path / "faiss").exists()


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("lmdb", "no backend"),
    ("lmbd:/x", "unknown backend 'lmbd'"),
    ("lmdb:", "missing path"),
    ("lmdb:?sync=false", "missing path"),
    ("duckdb://server/db", "not a URL"),
    ("lmdb:/x?path=/y", "path is given after the colon"),
    ("lmdb:/x?sync", "NAME=VALUE"),
    ("lmdb:/x?sync=true&sync=false", "given twice"),
    ("lmdb:/x?synk=true", "unknown option 'synk' for lmdb; it takes: map_size, name, sync"),
    ("tinydb:/x?sync=maybe", "'sync' must be true/false"),
    ("faiss:/x?dimension=abc", "'dimension' must be an integer"),
    ("faiss:/x?dimension=3.5", "'dimension' must be an integer"),
    ("duckdb:/x?query_timeout=inf", "'query_timeout' must be a finite number"),
    ("chroma:/x?collection=", "'collection' is empty"),
    ("faiss:/x?embedder=hashing", "cannot be given in a spec"),
    ("chroma:/x?host=h", "chroma+http://HOST:PORT"),
    ("chroma+http://h:8000?server=http://g", "chroma+http://HOST:PORT"),
    ("chroma+http://:8000", "names no host"),
    ("chroma+http://h:70000", "port must be a number from 1 to 65535"),
    ("chroma+http://h:0", "port must be a number from 1 to 65535"),
    ("chroma+http://h:port", "port must be a number from 1 to 65535"),
    ("chroma+http://user:pw@h:8000", "credentials"),
    ("chroma+http://h:8000/api", "no path"),
    ("http://h:8000", "names its backend"),
    ("no_such_pkg.mod:Store?path=/x", "unknown backend or module 'no_such_pkg.mod'"),
    ("memsys.specs:NoSuchStore", "has no class 'NoSuchStore'"),
    ("memsys.adapters.memory_store:InMemoryStore?path=", "path= is empty"),
    ("memsys.adapters.memory_store:InMemoryStore?colour=red", "unknown option 'colour'"),
    ("memsys.adapters.lmdb_store:LMDBMemoryAdapter", "missing path"),
    ("lmdb:/x\n", "control character"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_a_bad_spec_is_a_one_line_invalid_input_error(text, message) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_spec(text)
    text_of_error = str(caught.value)
    assert message in text_of_error
    assert "\n" not in text_of_error and (not text.strip() or repr(text) in text_of_error)


def test_a_non_string_spec_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="got int"):
        parse_spec(42)
    assert parse_spec(parse_spec("lmdb:/x")) == StoreSpec("lmdb", "/x", {}, "lmdb:/x")
