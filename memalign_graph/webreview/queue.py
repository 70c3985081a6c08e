"""Queue cases for expert review on a LangGraph Server: each case becomes a thread of the served ``review`` graph.

The engineer queues; the expert reviews in the browser (``/review``, :mod:`memalign_graph.webreview.app`)
or through any other client of the server. A queued case is judged at once and waits at the review
graph's interrupt (``collect_feedback``) until someone answers it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from memalign_graph.spec import case_hash

QUEUE_TAG = "memalign_queue"
"""Thread metadata key marking a thread as a queued review (value ``"review"``); a label for listing, no authority."""

_THREAD_NAMESPACE = uuid.UUID("0b6f3c52-8d0e-4c1a-9a57-3d4e8b7f6a21")
_CASE_KEYS = ("id", "inputs", "outputs", "expectations")


def queue_thread_id(judge: str | None, case: Mapping[str, Any]) -> str:
    """The thread id a case is queued under: the same judge and case id always give the same thread.

    The case id is ``case["id"]``, or ``"case-" + case hash`` for a case without one (the id its
    feedback record gets, see :func:`~memalign_graph.review.record_from_review`). So queueing a
    batch again does not queue its cases twice.
    """
    case_id = case.get("id") or f"case-{case_hash(dict(case))}"
    return str(uuid.uuid5(_THREAD_NAMESPACE, f"{judge or ''}\x00{case_id}"))


def _refusal(response: httpx.Response) -> str:
    """``"403: <the server's detail>"`` for a refused request."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"{response.status_code}: {detail or response.reason_phrase}"


def _case(case: Any, position: int) -> dict[str, Any]:
    if not isinstance(case, Mapping) or "inputs" not in case or "outputs" not in case:
        raise ValueError(f"case {position}: expected an object with 'inputs' and 'outputs'")
    return {k: case[k] for k in _CASE_KEYS if k in case}


async def aqueue_cases(
    cases: Iterable[Mapping[str, Any]],
    *,
    url: str,
    judge: str | None = None,
    token: str | None = None,
    concurrency: int = 4,
) -> list[dict[str, Any]]:
    """Queue ``cases`` for review on the LangGraph Server at ``url``; see :func:`queue_cases`."""
    from langgraph_sdk import get_client

    batch = [_case(case, position) for position, case in enumerate(cases, 1)]
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = get_client(url=url, api_key=None, headers=headers)
    context = {"judge": judge} if judge else None
    gate = asyncio.Semaphore(concurrency)

    async def one(case: dict[str, Any]) -> dict[str, Any]:
        thread_id = queue_thread_id(judge, case)
        row: dict[str, Any] = {"id": case.get("id") or f"case-{case_hash(case)}", "thread_id": thread_id}
        async with gate:
            try:
                thread = await client.threads.create(
                    thread_id=thread_id, metadata={QUEUE_TAG: "review"}, if_exists="do_nothing"
                )
                if thread.get("values"):
                    return {**row, "status": "queued before" if thread.get("status") == "interrupted" else "done"}
                out = await client.runs.wait(thread_id, "review", input=case, context=context, raise_error=False)
            except httpx.HTTPStatusError as exc:  # the server's answer (401, 403, 404, 422) names the problem
                return {**row, "status": "failed", "error": _refusal(exc.response)}
            except httpx.HTTPError as exc:
                return {**row, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        if isinstance(out, dict) and "__error__" in out:
            error = out["__error__"]
            return {**row, "status": "failed", "error": f"{error.get('error')}: {error.get('message')}"}
        return {**row, "status": "queued" if "__interrupt__" in (out or {}) else "not selected"}

    try:
        return list(await asyncio.gather(*(one(case) for case in batch)))
    finally:
        await client.http.client.aclose()


def queue_cases(
    cases: Iterable[Mapping[str, Any]],
    *,
    url: str,
    judge: str | None = None,
    token: str | None = None,
    concurrency: int = 4,
) -> list[dict[str, Any]]:
    """Queue ``cases`` for expert review on the LangGraph Server at ``url`` (e.g. ``http://127.0.0.1:2024``).

    Each case is judged by the served ``review`` graph in its own thread (:func:`queue_thread_id`),
    which then waits at the review interrupt; the expert answers it at ``url + "/review"``.

    Args:
        cases: objects with ``inputs`` and ``outputs`` (and optionally ``id``, ``expectations``).
        url: the server's base URL.
        judge: the served judge to use (``MEMALIGN_JUDGES``); may be left out when the server serves one.
        token: a bearer token from the server's token file (``MEMALIGN_AUTH_TOKENS``); none for a
            server that serves local requests only.
        concurrency: cases judged at once (each is one request to the server).

    Returns:
        One row per case, in order: ``{"id", "thread_id", "status"}``, status ``queued``,
        ``queued before`` (already waiting for review), ``done`` (reviewed before), ``not selected``
        (the review policy sent it to no one) or ``failed`` (with ``error``: the server's answer,
        e.g. an unknown token, a judge the token may not use, a case the judge refuses).

    Raises:
        ValueError: if a case is not an object with ``inputs`` and ``outputs`` (its position is
            named; nothing is queued), or ``concurrency`` is below 1.
    """
    return asyncio.run(aqueue_cases(cases, url=url, judge=judge, token=token, concurrency=concurrency))
