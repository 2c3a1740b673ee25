"""The example staging config (chaos/staging-chroma.toml), unchanged, against a live `chroma run`
behind a real Toxiproxy: it passes, and the server and the proxy keep exactly what they had."""

from __future__ import annotations

import json
import os

import pytest

from memsys import cli

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "chaos", "staging-chroma.toml")


@pytest.mark.server
def test_the_staging_example_passes_against_a_live_server_and_leaves_its_data_alone(
        chroma_server, toxiproxy, tmp_path, monkeypatch, capsys) -> None:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port,
                                 settings=Settings(anonymized_telemetry=False))
    # Data the run did not write: a collection of someone else's, and one named like the run's.
    theirs = client.get_or_create_collection("team-notes", embedding_function=None)
    theirs.upsert(ids=["n1", "n2"], embeddings=[[0.1, 0.2], [0.3, 0.4]], documents=["keep", "me"])
    same_name = client.get_or_create_collection("memsys-chaos", embedding_function=None)
    same_name.upsert(ids=["chaos-x"], embeddings=[[1.0, 0.0]], documents=["not the run's"])
    collections = sorted(c.name for c in client.list_collections())
    proxies = toxiproxy.client._call("GET", "/proxies")

    monkeypatch.setenv("STAGING_CHROMA", f"127.0.0.1:{chroma_server.port}")
    monkeypatch.setenv("TOXIPROXY_URL", f"http://127.0.0.1:{toxiproxy.port}")
    monkeypatch.setenv("CHAOS_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("CHAOS_REPORT", str(tmp_path / "report"))
    status = cli.main(["chaos", "run", "--config", EXAMPLE])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert status == 0, out
    assert report["finished"] and not report["failures"] and report["config"]["profile"] == "quick"
    names = [e["name"] for e in report["experiments"]]
    assert names[0] == "fault injection" and report["experiments"][0]["target"] == "chroma"
    network = [e for e in report["experiments"] if e["name"].startswith("network")]
    assert len(network) == 4 and all(e["status"] == "ok" for e in network), network  # latency x 2 streams, down x 2
    assert report["experiments"][0]["acknowledged"] > 0 and report["experiments"][0]["faults"] > 0
    assert (tmp_path / "report" / "report.html").exists()

    assert sorted(c.name for c in client.list_collections()) == collections, "the run left or took a collection"
    assert theirs.get(ids=["n1", "n2"])["documents"] == ["keep", "me"]
    assert same_name.get()["ids"] == ["chaos-x"]
    assert toxiproxy.client._call("GET", "/proxies") == proxies, "the run left a proxy or a toxic behind"
