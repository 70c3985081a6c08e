"""A local OpenAI-compatible HTTP server for tests (stdlib only): ``/v1/chat/completions`` and ``/v1/embeddings``.

It keeps connections alive (HTTP/1.1), as every real server does, so a client bound to a
closed event loop fails here as it would in production. Chat answers come from
:func:`memalign_graph.testing.default_responder` (valid judgments, one principle per
feedback record). Requested ``logprobs`` are returned in OpenAI's shape: every token carries
the ``top_logprobs`` alternatives asked for (OpenAI's default 0 when not asked), the judged
value's token those of every allowed value first. Embeddings come as OpenAI sends them: floats,
or base64 of little-endian float32 when the request says ``encoding_format: "base64"`` (the
OpenAI SDK's default). Models whose name
contains ``no-logprobs`` answer HTTP 400 to a request with ``logprobs``, and models
whose name contains ``no-temperature`` answer HTTP 400 to a request with ``temperature``,
the way OpenAI's reasoning models do. Every request body is recorded in ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from memalign_graph.testing import default_responder

DIM = 64


def embed(text: str) -> list[float]:
    """Bag-of-words hashing vector, L2-normalised (texts sharing words are similar)."""
    vector = [0.0] * DIM
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % DIM] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _logprobs(text: str, values: list[Any], alternatives: int) -> dict[str, Any]:
    """OpenAI-style ``logprobs.content``: one token per character run, ``alternatives`` per token.

    At the value, 0.7 for the value answered and 0.3 shared by the other allowed values; the
    alternatives beyond those are other tokens of negligible probability.
    """
    tokens = re.findall(r"\w+|[^\w]", text)
    match = re.search(r'"value"\s*:\s*"?', text)
    content, offset = [], 0
    for token in tokens:
        top = [{"token": token, "logprob": 0.0, "bytes": None}]
        entry: dict[str, Any] = {"token": token, "logprob": 0.0, "bytes": None}
        if match is not None and offset == match.end() and values:
            rest = [v for v in values if str(v) != token]
            entry["logprob"] = math.log(0.7)
            top = [{"token": token, "logprob": math.log(0.7), "bytes": None}] + [
                {"token": str(v), "logprob": math.log(0.3 / len(rest)), "bytes": None} for v in rest
            ]
        top += [{"token": f"~{i}", "logprob": -20.0, "bytes": None} for i in range(max(0, alternatives - len(top)))]
        entry["top_logprobs"] = top[:alternatives]
        content.append(entry)
        offset += len(token)
    return {"content": content, "refusal": None}


def embedding(vector: list[float], encoding_format: str | None) -> list[float] | str:
    """A vector as OpenAI returns it: floats, or base64 of little-endian float32 for ``"base64"``."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # As real servers do: without it the body, written after the headers, waits for the
        # client's delayed ACK on a kept-alive connection (~40 ms per request on Linux).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with self.server.lock:
            self.server.requests.append({"path": self.path, **body})
        if self.path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            encoding = body.get("encoding_format")
            data = [
                {"object": "embedding", "index": i, "embedding": embedding(embed(str(t)), encoding)}
                for i, t in enumerate(texts)
            ]
            self._send(200, {"object": "list", "data": data, "model": body.get("model"), "usage": _usage(0, 0)})
            return
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        model = str(body.get("model", ""))
        for word, param in (("no-logprobs", "logprobs"), ("no-temperature", "temperature")):
            if word in model and body.get(param) is not None:
                message = f"Unsupported parameter: '{param}' is not supported with this model."
                self._send(400, {"error": {"message": message, "type": "invalid_request_error", "param": param}})
                return
        roles = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        messages = [roles.get(m["role"], HumanMessage)(m.get("content") or "") for m in body["messages"]]
        text = default_responder(messages, {"response_format": body.get("response_format")})
        prompt_tokens = sum(len(m.text) for m in messages) // 4
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None,
        }
        if body.get("logprobs"):
            schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
            values = schema.get("properties", {}).get("value", {}).get("enum") or []
            choice["logprobs"] = _logprobs(text, values, int(body.get("top_logprobs") or 0))
        self._send(
            200,
            {
                "id": f"chatcmpl-{len(self.server.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [choice],
                "usage": _usage(prompt_tokens, len(text) // 4),
            },
        )


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()


@contextmanager
def openai_stub() -> Iterator[_Server]:
    """Serve on 127.0.0.1 (a free port) until the block ends; ``server.url`` is the ``/v1`` base URL."""
    server = _Server()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
