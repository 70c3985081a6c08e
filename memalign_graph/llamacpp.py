"""A LangChain chat model that runs a GGUF file in-process with llama.cpp (xllamacpp).

This runs the embedded offline models (:mod:`memalign_graph.modelfiles`: Qwen2.5-Coder-0.5B-Instruct
by default, assembled from PyPI part packages and verified by SHA-256) or any local GGUF file, with
the prebuilt ``xllamacpp`` wheel (no compiler, no network). It accepts OpenAI-style
``response_format`` (a JSON schema, compiled
to a grammar, so the answer is always valid JSON) and ``logprobs``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from memalign_graph.modelfiles import embedded_model, ensure_model_file

_servers: dict[tuple[Any, ...], Any] = {}
_servers_lock = threading.Lock()


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, (HumanMessage, ToolMessage)):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    return "user"


class ChatLlamaCpp(BaseChatModel):
    """Chat model over a local GGUF file, served in-process by llama.cpp.

    One llama.cpp server is shared per (file, context size, slots, threads) in
    the process; it is thread-safe and reuses shared prompt prefixes, so
    concurrent calls (``abatch``) are served from several slots.

    Args:
        model_path: GGUF file; default: the embedded model named by ``embedded``.
        embedded: an embedded model name (:data:`memalign_graph.modelfiles.EMBEDDED_MODELS`); default
            ``MEMALIGN_EMBEDDED_MODEL`` or Qwen2.5-Coder-0.5B-Instruct. Ignored when ``model_path`` is set.
        n_ctx: context window in tokens, shared by all slots (default: the embedded model's
            per-request window, 8192, times ``n_parallel``; 8192 per slot for other files).
        n_parallel: number of slots (concurrent requests).
        n_threads: CPU threads; default: all cores.
        temperature: sampling temperature; 0 is greedy.
        max_tokens: cap on generated tokens per call.
        seed: sampling seed.
        repeat_penalty: llama.cpp repetition penalty; small models loop without it.

    Extra call kwargs passed through to llama.cpp: ``response_format``,
    ``logprobs``, ``top_logprobs``, ``stop``, ``max_tokens``.
    """

    model_path: str | None = None
    embedded: str | None = None
    n_ctx: int = 0
    n_parallel: int = 2
    n_threads: int | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int = 0
    repeat_penalty: float = 1.15
    model_name: str = Field(default="")
    _server: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:  # noqa: D102
        per_slot = 8192
        if self.model_path is None:
            model = embedded_model(self.embedded)
            self.embedded = model.name
            per_slot = model.n_ctx
            if not self.model_name:
                self.model_name = model.display_name
        elif not self.model_name:
            self.model_name = Path(self.model_path).stem
        if not self.n_ctx:
            self.n_ctx = per_slot * max(1, self.n_parallel)

    @property
    def context_window(self) -> int:
        """Tokens one request may use (prompt + answer): the context divided among the slots."""
        return self.n_ctx // max(1, self.n_parallel)

    @property
    def _llm_type(self) -> str:
        return "llamacpp-inprocess"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "n_ctx": self.n_ctx, "temperature": self.temperature}

    def _get_server(self) -> Any:
        if self._server is not None:
            return self._server
        path = str(self.model_path or ensure_model_file(self.embedded))
        threads = self.n_threads or os.cpu_count() or 1
        key = (path, self.n_ctx, self.n_parallel, threads)
        with _servers_lock:
            server = _servers.get(key)
            if server is None:
                import xllamacpp

                params = xllamacpp.CommonParams()
                params.model.path = path
                params.n_ctx = self.n_ctx
                params.n_parallel = self.n_parallel
                params.cpuparams.n_threads = threads
                params.cpuparams_batch.n_threads = threads
                params.warmup = False
                params.verbosity = -1
                server = xllamacpp.Server(params)
                _servers[key] = server
        self._server = server
        return server

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request: dict[str, Any] = {
            "messages": [{"role": _role(m), "content": m.text} for m in messages],
            "temperature": self.temperature,
            "max_tokens": kwargs.pop("max_tokens", self.max_tokens),
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
        }
        if stop:
            request["stop"] = stop
        for key in ("response_format", "logprobs", "top_logprobs"):
            if key in kwargs:
                request[key] = kwargs.pop(key)
        response = self._get_server().handle_chat_completions(request)
        if not isinstance(response, dict) or "choices" not in response:
            raise RuntimeError(f"llama.cpp returned an error for model {self.model_name!r}: {response!r}")
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        usage_metadata = UsageMetadata(
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            total_tokens=int(usage.get("total_tokens", 0)),
        )
        metadata: dict[str, Any] = {"model_name": self.model_name, "finish_reason": choice.get("finish_reason")}
        if choice.get("logprobs"):
            metadata["logprobs"] = choice["logprobs"]
        message = AIMessage(
            content=choice["message"].get("content") or "",
            usage_metadata=usage_metadata,
            response_metadata=metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
