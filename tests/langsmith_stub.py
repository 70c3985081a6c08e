"""A local server that speaks the LangSmith REST API, for the calls that read a project's runs and feedback.

It serves what ``langsmith.Client`` requests for ``read_project`` / ``list_runs`` /
``list_feedback``, with the shapes LangSmith's API documents:

* ``GET /info``: the server's version and settings (:data:`INFO`);
* ``GET /sessions?name=NAME&limit=1&include_stats=…``: a list of matching projects (``TracerSession``);
* ``POST /runs/query`` with a JSON body (``session``, ``is_root``, ``select``, ``limit``, ``cursor``, …):
  ``{"runs": [...], "cursors": {"next": CURSOR | null}}``, :attr:`LangSmithStub.page` runs a page, each
  run holding only the selected fields;
* ``GET /feedback?run=ID&run=ID&key=KEY&limit=N&offset=N``: a list of ``Feedback`` objects, offset-paged.

Every request must carry the ``x-api-key`` header (else 401, as LangSmith answers). A query
parameter or body field the API does not define is answered 422 and a path it does not serve 404,
so a client that sends something else fails here instead of passing unnoticed; every request is
recorded in :attr:`LangSmithStub.requests`. Served by uvicorn on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from langsmith.schemas import Feedback, Run
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RUNS_QUERY_FIELDS = {
    "session",
    "run_type",
    "reference_example",
    "query",
    "filter",
    "trace_filter",
    "tree_filter",
    "is_root",
    "parent_run",
    "start_time",
    "error",
    "id",
    "trace",
    "select",
    "limit",
    "cursor",
    "order",
}
"""Body fields of ``POST /runs/query`` (LangSmith's ``BodyParamsForRunSchema``)."""
INFO = {
    "version": "0.12.33",
    "license_expiration_time": None,
    "batch_ingest_config": {"use_multipart_endpoint": True, "size_limit": 100, "size_limit_bytes": 20_971_520},
    "instance_flags": {},
}
"""``GET /info`` of a self-hosted LangSmith server (``langsmith.schemas.LangSmithInfo``)."""
FEEDBACK_PARAMS = {"run", "key", "session", "source", "limit", "offset", "user", "has_comment", "has_score", "level"}
"""Query parameters of ``GET /feedback``."""
SESSIONS_PARAMS = {"name", "name_contains", "limit", "offset", "include_stats", "reference_dataset", "id"}
"""Query parameters of ``GET /sessions``."""


@dataclass
class LangSmithStub:
    """Projects with runs, and feedback, served as LangSmith serves them.

    Attributes:
        api_key: the key every request must send in ``x-api-key``.
        projects: project name -> its runs.
        feedback: feedback on any of those runs.
        page: runs per ``/runs/query`` page (small, so the client's cursor paging is exercised).
        requests: ``(method, path, query items, JSON body or None)`` of every request, in order.
        refused: ``(path, status)`` of every request answered 401, 404 or 422.
        url: the server's base URL once started.
    """

    api_key: str
    projects: dict[str, list[Run]]
    feedback: list[Feedback] = field(default_factory=list)
    page: int = 2
    requests: list[tuple[str, str, list[tuple[str, str]], Any]] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self.ids = {name: uuid.uuid5(uuid.NAMESPACE_URL, f"project:{name}") for name in self.projects}

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/info", self._info, methods=["GET"]),
                Route("/sessions", self._sessions, methods=["GET"]),
                Route("/runs/query", self._runs_query, methods=["POST"]),
                Route("/feedback", self._feedback, methods=["GET"]),
                Route("/{path:path}", self._unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )

    async def _checked(self, request: Request, allowed: set[str] | None) -> tuple[Any, JSONResponse | None]:
        body = None
        raw = await request.body()
        if raw:
            body = json.loads(raw)
        self.requests.append((request.method, request.url.path, list(request.query_params.multi_items()), body))
        if request.headers.get("x-api-key") != self.api_key:
            return body, self._refuse(request, 401, "Invalid token")
        names = set(body) if request.method == "POST" else set(request.query_params)
        unknown = sorted(names - (allowed or set()))
        if unknown:
            return body, self._refuse(request, 422, f"unknown fields {unknown}")
        return body, None

    def _refuse(self, request: Request, status: int, detail: str) -> JSONResponse:
        self.refused.append((request.url.path, status))
        return JSONResponse({"detail": detail}, status_code=status)

    async def _unknown(self, request: Request) -> JSONResponse:
        _, refused = await self._checked(request, set())
        return refused or self._refuse(request, 404, "Not Found")

    async def _info(self, request: Request) -> JSONResponse:
        _, refused = await self._checked(request, set())
        return refused or JSONResponse(INFO)

    async def _sessions(self, request: Request) -> JSONResponse:
        _, refused = await self._checked(request, SESSIONS_PARAMS)
        if refused:
            return refused
        name = request.query_params.get("name")
        if name not in self.projects:
            return JSONResponse([])
        project = {
            "id": str(self.ids[name]),
            "name": name,
            "tenant_id": str(uuid.UUID(int=1)),
            "start_time": datetime(2026, 11, 1, tzinfo=UTC).isoformat(),
            "reference_dataset_id": None,
        }
        return JSONResponse([project])

    async def _runs_query(self, request: Request) -> JSONResponse:
        body, refused = await self._checked(request, RUNS_QUERY_FIELDS)
        if refused:
            return refused
        sessions = body.get("session")
        select = body.get("select")
        if not isinstance(sessions, list) or not (isinstance(select, list) and all(isinstance(f, str) for f in select)):
            return self._refuse(request, 422, "session and select must be lists of strings")
        by_id = {str(pid): name for name, pid in self.ids.items()}
        runs = [run for s in sessions for run in self.projects.get(by_id.get(s, ""), [])]
        if body.get("is_root") is True:
            runs = [run for run in runs if run.parent_run_id is None]
        runs.sort(key=lambda run: run.start_time, reverse=True)
        start = int(body.get("cursor") or 0)
        page = runs[start : start + self.page]
        if body.get("limit") is not None:
            page = page[: int(body["limit"])]
        served = [{k: v for k, v in json.loads(run.model_dump_json()).items() if k in {*select, "id"}} for run in page]
        following = start + len(page)
        nxt = str(following) if following < len(runs) and body.get("limit") is None else None
        return JSONResponse({"runs": served, "cursors": {"next": nxt}})

    async def _feedback(self, request: Request) -> JSONResponse:
        _, refused = await self._checked(request, FEEDBACK_PARAMS)
        if refused:
            return refused
        runs = set(request.query_params.getlist("run"))
        keys = set(request.query_params.getlist("key"))
        limit = int(request.query_params.get("limit", 100))
        offset = int(request.query_params.get("offset", 0))
        if not 1 <= limit <= 100:
            return self._refuse(request, 422, "limit must be 1-100")
        items = [
            json.loads(f.model_dump_json())
            for f in self.feedback
            if (not runs or str(f.run_id) in runs) and (not keys or f.key in keys)
        ]
        return JSONResponse(items[offset : offset + limit])


@contextmanager
def serve(stub: LangSmithStub) -> Iterator[LangSmithStub]:
    """Serve ``stub`` on 127.0.0.1 (a free port) until the block ends; ``stub.url`` is its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    stub.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(stub.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the LangSmith stub server did not start")
        time.sleep(0.01)
    try:
        yield stub
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
