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

from memalign_graph.spec import CASE_KEYS, case_hash

QUEUE_TAG = "memalign_queue"
"""Thread metadata key of a queued review; its value is :func:`queue_key` (a label to find it by, no authority)."""

_KEY_NAMESPACE = uuid.UUID("0b6f3c52-8d0e-4c1a-9a57-3d4e8b7f6a21")


def case_id(case: Mapping[str, Any]) -> str:
    """``case["id"]``, or ``"case-" + case hash``: the id the case's feedback record gets (``record_from_review``)."""
    return str(case.get("id") or f"case-{case_hash(dict(case))}")


def queue_key(judge: str | None, case: Mapping[str, Any]) -> str:
    """The label a case is queued under: the same judge and case id always give the same key.

    A thread with this key in its metadata (:data:`QUEUE_TAG`) among the queueing user's own
    threads means the case is queued already, so queueing a batch again does not queue its
    cases twice. (The server makes the thread ids: a client may name only ids in its own id
    space, see :func:`memalign_graph.auth.thread_id`.)
    """
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{judge or ''}\x00{case_id(case)}"))


def refusal(response: httpx.Response) -> str:
    """``"403: <the server's detail>"`` for a refused request."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"{response.status_code}: {detail or response.reason_phrase}"


def _case(case: Any, position: int) -> dict[str, Any]:
    if not isinstance(case, Mapping) or "inputs" not in case or "outputs" not in case:
        raise ValueError(f"case {position}: expected an object with 'inputs' and 'outputs'")
    return {k: case[k] for k in CASE_KEYS if k in case}


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
        key = queue_key(judge, case)
        row: dict[str, Any] = {"id": case_id(case), "thread_id": None}
        async with gate:
            try:
                found = await client.threads.search(metadata={QUEUE_TAG: key}, limit=1)
                if found and found[0].get("values"):
                    status = "queued before" if found[0].get("status") == "interrupted" else "done"
                    return {**row, "thread_id": found[0]["thread_id"], "status": status}
                thread = found[0] if found else await client.threads.create(metadata={QUEUE_TAG: key})
                row["thread_id"] = thread["thread_id"]
                out = await client.runs.wait(
                    thread["thread_id"], "review", input=case, context=context, raise_error=False
                )
            except httpx.HTTPStatusError as exc:  # the server's answer (401, 403, 404, 422) names the problem
                return {**row, "status": "failed", "error": refusal(exc.response)}
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

    Each case is judged by the served ``review`` graph in a thread of its own, which then waits
    at the review interrupt; the expert answers it at ``url + "/review/"``. A case the same user
    queued before for the same judge (same :func:`queue_key`) is not queued again.

    Args:
        cases: objects with ``inputs`` and ``outputs`` (and optionally ``id``, ``expectations``).
        url: the server's base URL.
        judge: the served judge to use (``MEMALIGN_JUDGES``); may be left out when the server serves one.
        token: a bearer token from the server's token file (``MEMALIGN_AUTH_TOKENS``); none for a
            server that serves local requests only.
        concurrency: cases judged at once (each is one request to the server).

    Returns:
        One row per case, in order: ``{"id", "thread_id", "status"}`` (``thread_id`` ``None`` if no
        thread was made), status ``queued``,
        ``queued before`` (already waiting for review), ``done`` (reviewed before), ``not selected``
        (the review policy sent it to no one) or ``failed`` (with ``error``: the server's answer,
        e.g. an unknown token, a judge the token may not use, a case the judge refuses).

    Raises:
        ValueError: if a case is not an object with ``inputs`` and ``outputs`` (its position is
            named; nothing is queued), or ``concurrency`` is below 1.
    """
    return asyncio.run(aqueue_cases(cases, url=url, judge=judge, token=token, concurrency=concurrency))
