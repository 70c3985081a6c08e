"""The review queue page: a Starlette app LangGraph Server mounts through ``http.app`` in ``langgraph.json``.

Routes (all under ``/review``):

- ``GET /review/``: the sign-in form, or the queue: cases waiting at the review interrupt, and
  (for approvers) each judge's principles held for approval that they may approve, never those
  from their own feedback;
- ``POST /review/sign-in``, ``POST /review/sign-out``: the token in an HttpOnly, SameSite=Strict cookie;
- ``GET /review/case/{thread_id}``: one case (the case, the judgment, the principles and episodes the
  judge saw) with accept / correct / skip, or what the answer changed once it is answered (with the
  principles it had held for another expert's approval);
- ``POST /review/case/{thread_id}``: the answer, which resumes the interrupt;
- ``GET /review/principles/{judge}``: the judge's held principles the user may approve, with
  approve / reject; ``POST`` applies the decisions through the served ``principles`` graph, which
  checks them again (the approver role, never one's own feedback) before anything is written;
- ``GET /review/static/...``: the style sheet and the script (keyboard shortcuts).

Trust boundary: the page holds no authority of its own. Every read and write is a request to the
server's own API, made in-process with the caller's credentials (the ``Authorization`` header, or
the sign-in cookie turned into one) and the caller's network address, so the server's
authentication and ``@auth.on`` handlers (:mod:`memalign_graph.auth`) decide exactly as for any
API client. (``langgraph_sdk.get_client()`` without a URL is not used: its in-process requests
skip authentication.) On top of that: a strict Content-Security-Policy (scripts and styles from
this app only, nothing inline), every piece of text HTML-escaped by the templates with bidi and
other invisible control characters shown as visible marks, a CSRF token on every form, refusal
of cross-site requests that are not plain navigations (Fetch Metadata), and an answer validated
with the review graph's own answer model before it resumes the interrupt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from langgraph_sdk import Auth
from langgraph_sdk.client import LangGraphClient
from markupsafe import Markup, escape
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memalign_graph.auth import ServedUser, has_role, identify, may_use
from memalign_graph.context import served_judges
from memalign_graph.review import principles_answer_model, review_answer_model
from memalign_graph.spec import MAX_FIELD_CHARS
from memalign_graph.webreview.queue import refusal

HERE = Path(__file__).parent
TOKEN_COOKIE = "memalign_review_token"
CSRF_COOKIE = "memalign_review_csrf"
QUEUE_LIMIT = 100
"""Most threads one queue page lists (the oldest first)."""
SNIPPET_CHARS = 160
"""Characters of a case's input shown in the queue."""
MAX_FORM_BYTES = 4 * MAX_FIELD_CHARS + 65_536
"""Largest form body accepted: a feedback text at its limit, UTF-8 encoded, plus the other fields."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "cache-control": "no-store",
}

# Characters that change how the text around them is displayed or hide text: bidi embeddings,
# overrides and isolates (Trojan Source, CVE-2021-42574), zero-width characters, and C0/C1
# controls other than tab and newline. Shown as visible ``U+XXXX`` marks instead.
_INVISIBLE = re.compile("[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_SECRET = secrets.token_bytes(32)


def reveal(text: Any) -> Markup:
    """``text`` HTML-escaped, with invisible and direction-changing characters as visible ``U+XXXX`` marks."""
    escaped = str(escape(text if isinstance(text, str) else str(text)))
    return Markup(
        _INVISIBLE.sub(lambda m: f'<span class="ctl" title="hidden character">U+{ord(m.group()):04X}</span>', escaped)
    )


def as_text(value: Any) -> str:
    """A case field as display text: a string as it is, anything else as indented JSON."""
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)


def snippet(value: Any, limit: int = SNIPPET_CHARS) -> str:
    """The first ``limit`` characters of :func:`as_text` on one line."""
    text = " ".join(as_text(value)[: 4 * limit].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
templates.filters.update(reveal=reveal, as_text=as_text, snippet=snippet)


@dataclass(frozen=True)
class Principal:
    """Who is signed in (:class:`~memalign_graph.auth.ServedUser`: identity, judges, roles) and the credential used."""

    user: ServedUser
    authorization: str | None

    @property
    def name(self) -> str:
        """The user's identity."""
        return self.user.identity

    def can(self, role: str) -> bool:
        """Whether the user has ``role`` (see :data:`memalign_graph.auth.ROLES`)."""
        return has_role(self.user, role)


def identify_request(authorization: str | None, scope: Scope) -> Principal | None:
    """The principal ``authorization`` (``"Bearer TOKEN"`` or ``None``) stands for, by the server's own authentication.

    Returns ``None`` where the API would answer 401 (an unknown token; no token on a server
    with a token file; a request that is not local on a server without one).
    """
    try:
        return Principal(identify(authorization, scope), authorization)
    except Auth.exceptions.HTTPException:
        return None


def api(request: Request, principal: Principal) -> LangGraphClient:
    """The server's own API, in-process, as ``principal`` on the request's own connection.

    The in-process request carries the browser's connection (its peer as ``client``, and the
    local address it arrived on as ``server``, which httpx takes from the base URL), so the
    server's authentication sees what it would see from the browser itself.
    """
    import langgraph_api.server
    from langgraph_api.asgi_transport import ASGITransport

    client = request.scope.get("client") or ("0.0.0.0", 0)
    host, port = request.scope.get("server") or ("0.0.0.0", 0)
    transport = ASGITransport(app=langgraph_api.server.app, client=tuple(client))
    base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    headers = {"Authorization": principal.authorization} if principal.authorization else {}
    return LangGraphClient(httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers, timeout=None))


def csrf_token(request: Request) -> str:
    """The token every form of this browser carries: an HMAC of its CSRF cookie under this process's secret."""
    cookie = request.cookies.get(CSRF_COOKIE) or request.state.new_csrf_cookie
    return hmac.new(_SECRET, cookie.encode(), hashlib.sha256).hexdigest()


def csrf_ok(request: Request, form: FormData) -> bool:
    """Whether ``form`` carries this browser's CSRF token (requests with an ``Authorization`` header need none)."""
    if request.headers.get("authorization"):  # a cross-site page cannot attach a header it does not know
        return True
    cookie, sent = request.cookies.get(CSRF_COOKIE), form.get("csrf_token")
    if not cookie or not isinstance(sent, str):
        return False
    expected = hmac.new(_SECRET, cookie.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sent)


class Guard:
    """ASGI middleware: security headers on every response; cross-site requests other than navigations refused.

    Fetch Metadata (``Sec-Fetch-Site``/``Sec-Fetch-Mode``, sent by every current browser): a
    request another site starts is served only when it is a plain top-level navigation, so no
    other site can read the page through ``fetch`` or send it a form.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope`` with the security headers, or refuse it (403) as described above."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        site, mode = headers.get("sec-fetch-site"), headers.get("sec-fetch-mode")
        navigation = scope["method"] in ("GET", "HEAD") and mode == "navigate"
        refused = site in ("cross-site", "same-site") and not navigation

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    (k, v) for k, v in message["headers"] if k.decode("latin-1").lower() not in SECURITY_HEADERS
                ] + [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        if refused:
            await Response("cross-site request refused", status_code=403, media_type="text/plain")(
                scope, receive, send_secured
            )
            return
        await self.app(scope, receive, send_secured)


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """Template ``name`` rendered with ``values`` (autoescaped); sets the CSRF cookie on first visit."""
    request.state.new_csrf_cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    html = templates.get_template(name).render(
        url=lambda route, **params: request.url_for(route, **params).path,
        csrf=csrf_token(request),
        **values,
    )
    response = HTMLResponse(html, status_code=status_code)
    if CSRF_COOKIE not in request.cookies:
        _set_cookie(request, response, CSRF_COOKIE, request.state.new_csrf_cookie)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=request.url_for("queue").path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _authorization(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        return header
    token = request.cookies.get(TOKEN_COOKIE)
    return f"Bearer {token}" if token else None


_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


async def signed_in(request: Request) -> Principal | None:
    """The principal of this request, or ``None`` (show the sign-in form).

    Without any credential (a server with no token file serves loopback requests), the
    request must also name a loopback host, so a DNS-rebound name cannot reach the page.
    """
    authorization = _authorization(request)
    principal = identify_request(authorization, request.scope)
    if principal is not None and authorization is None and request.url.hostname not in _LOOPBACK_HOSTS:
        return None
    return principal


Handler = Callable[[Request, Principal], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A route for signed-in users; others get the sign-in form (401). POSTs need the CSRF token (403)."""

    async def endpoint(request: Request) -> Response:
        principal = await signed_in(request)
        if principal is None:
            return render(request, "sign_in.html", status_code=401, error=None)
        if request.method == "POST":
            form = await _form(request)
            if form is None:
                return _problem(request, principal, 400, "The form could not be read: too large, or not UTF-8.")
            if not csrf_ok(request, form):
                return _problem(request, principal, 403, "This form has expired or did not come from this page.")
            request.state.form = form
        return await handler(request, principal)

    return endpoint


async def _form(request: Request) -> FormData | None:
    """The URL-encoded form body, or ``None`` when it is over :data:`MAX_FORM_BYTES` or not UTF-8."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        return FormData(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=256, errors="strict"))
    except (UnicodeDecodeError, ValueError):
        return None


def _problem(request: Request, principal: Principal | None, status: int, message: str) -> HTMLResponse:
    return render(request, "problem.html", status_code=status, principal=principal, message=message)


async def sign_in(request: Request) -> Response:
    """Check the token with the server's authentication; keep it in an HttpOnly, SameSite=Strict cookie."""
    form = await _form(request)
    if form is None or not csrf_ok(request, form):
        return _problem(request, None, 403, "This form has expired or did not come from this page. Reload and retry.")
    token = str(form.get("token") or "").strip()
    if not token or identify_request(f"Bearer {token}", request.scope) is None:
        return render(request, "sign_in.html", status_code=401, error="This token is not valid on this server.")
    response = RedirectResponse(request.url_for("queue").path, status_code=303)
    _set_cookie(request, response, TOKEN_COOKIE, token)
    return response


@page
async def sign_out(request: Request, principal: Principal) -> Response:
    """Forget the sign-in cookie."""
    response = RedirectResponse(request.url_for("queue").path, status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path=request.url_for("queue").path)
    return response


def _first_interrupt(thread: dict[str, Any]) -> dict[str, Any] | None:
    for interrupts in (thread.get("interrupts") or {}).values():
        if interrupts:
            return interrupts[0]
    return None


async def _thread_judge(client: LangGraphClient, thread: dict[str, Any]) -> str | None:
    """The served judge of a review thread, so a resume uses the same one.

    The server records it in the thread's metadata (``judge``); a thread from before that
    has it in its runs' context.
    """
    judge = (thread.get("metadata") or {}).get("judge")
    if isinstance(judge, str):
        return judge
    for run in await client.runs.list(thread["thread_id"], limit=20):
        context = (run.get("kwargs") or {}).get("context") or {}
        if isinstance(context, dict) and isinstance(context.get("judge"), str):
            return context["judge"]
    return None


async def _waiting(client: LangGraphClient, principal: Principal) -> tuple[list[dict], bool]:
    """``(cases, more)``: review threads waiting at the review question for ``principal``, oldest first.

    Each case is ``{"thread_id", "payload"}`` (none without the reviewer role). ``more``: the
    queue holds more than :data:`QUEUE_LIMIT`.
    """
    if not principal.can("reviewer"):
        return [], False
    threads = await client.threads.search(
        metadata={"graph_id": "review"},
        status="interrupted",
        limit=QUEUE_LIMIT + 1,
        sort_by="created_at",
        sort_order="asc",
    )
    cases = []
    for thread in threads[:QUEUE_LIMIT]:
        payload = (_first_interrupt(thread) or {}).get("value")
        judge = (thread.get("metadata") or {}).get("judge")
        if not isinstance(payload, dict) or payload.get("kind") == "principles":  # held principles: see _held
            continue
        if isinstance(judge, str) and not may_use(principal.user, judge):
            continue
        cases.append({"thread_id": thread["thread_id"], "payload": payload})
    return cases, len(threads) > QUEUE_LIMIT


async def _principles(client: LangGraphClient, judge: str, decisions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The served ``principles`` graph's answer for ``judge``: ``{"decision", "pending"}``, or ``{"error": message}``.

    ``decisions`` (``{"approve": [ids], "reject": [ids]}``) are applied first, with the signed-in
    user's credentials: the server checks the user's roles before anything is written.
    """
    out = await client.runs.wait(None, "principles", input=decisions or {}, context={"judge": judge}, raise_error=False)
    if not isinstance(out, dict) or "__error__" in out:
        error = (out or {}).get("__error__") or {} if isinstance(out, dict) else {}
        return {"error": f"{error.get('error', 'Error')}: {error.get('message', 'the server gave no answer')}"}
    return out


async def _held(client: LangGraphClient, principal: Principal) -> list[dict[str, Any]]:
    """``[{"judge", "pending"}]``: per judge, the held principles ``principal`` may approve (approvers only)."""
    if not principal.can("approver"):
        return []
    judges = [j for j in sorted(served_judges()) if may_use(principal.user, j)]
    listed = await asyncio.gather(*(_principles(client, judge) for judge in judges))
    held = []
    for judge, answer in zip(judges, listed):
        mine = [p for p in answer.get("pending") or () if p.get("may_approve")]
        if mine:
            held.append({"judge": judge, "pending": mine})
    return held


@page
async def queue(request: Request, principal: Principal) -> Response:
    """The queue: cases waiting for review, and principles held for approval, oldest first."""
    async with api(request, principal) as client:
        (cases, more), held = await asyncio.gather(_waiting(client, principal), _held(client, principal))
    return render(
        request,
        "queue.html",
        principal=principal,
        cases=cases,
        held=held,
        more=more,
        judges=[j for j in sorted(served_judges()) if may_use(principal.user, j)],
    )


async def _next_case(client: LangGraphClient, principal: Principal, after: str) -> str | None:
    cases, _ = await _waiting(client, principal)
    return next((row["thread_id"] for row in cases if row["thread_id"] != after), None)


@page
async def case(request: Request, principal: Principal) -> Response:
    """One thread: its open question (a case to review, or principles to approve), or what its answers changed."""
    thread_id = request.path_params["thread_id"]
    async with api(request, principal) as client:
        try:
            thread = await client.threads.get(thread_id)
        except httpx.HTTPStatusError as exc:
            return _problem(request, principal, 404, _not_found(exc))
        pending = _first_interrupt(thread)
        payload = (pending or {}).get("value") or {}
        held = payload.get("kind") == "principles"
        if pending is None or held:
            # Answered; or its principles wait for another expert, who decides them on the judge's principles page.
            return render(
                request,
                "done.html",
                principal=principal,
                thread_id=thread_id,
                values=thread.get("values") or {},
                held=payload.get("proposed") if held else None,
                next_case=await _next_case(client, principal, thread_id),
            )
    if not principal.can("reviewer"):
        return _problem(request, principal, 403, NOT_A_REVIEWER)
    return render(
        request,
        "case.html",
        principal=principal,
        thread_id=thread_id,
        pending=pending,
        errors=[],
        answer={},
        max_chars=MAX_FIELD_CHARS,
    )


NOT_A_REVIEWER = "Your token may use this judge but not review its judgments (no reviewer role)."


def _not_found(exc: httpx.HTTPStatusError) -> str:
    if exc.response.status_code in (401, 403, 404):
        return "No such case in your queue."
    return f"The server could not load this case ({exc.response.status_code})."


def _answer_model(values: list[Any]) -> Any:
    """The review graph's own answer model for a judge with ``values`` (as the interrupt's payload lists them)."""

    class _Judge:  # review_answer_model reads only the judge's values
        pass

    judge = _Judge()
    judge.values = values  # type: ignore[attr-defined]
    return review_answer_model(judge)  # type: ignore[arg-type]


def _review_answer(form: FormData, values: list[Any]) -> dict[str, Any]:
    """The form as a review answer, validated by the graph's answer model.

    Raises:
        pydantic.ValidationError: as the graph would raise it on resume.
    """
    answer: dict[str, Any] = {"action": form.get("action")}
    chosen = form.get("value")
    if answer["action"] == "correct" and chosen:
        answer["value"] = next((v for v in values if str(v) == chosen), chosen)
    feedback = str(form.get("feedback") or "").strip()
    if answer["action"] == "correct" and feedback:
        answer["feedback"] = feedback
    return _answer_model(values)(**answer).model_dump(exclude_none=True)


def _field_errors(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "answer"
        out.append(f"{where}: {error['msg']}")
    return out


@page
async def answer(request: Request, principal: Principal) -> Response:
    """Resume the thread's interrupt with the validated answer; then show what it changed (redirect)."""
    thread_id = request.path_params["thread_id"]
    form: FormData = request.state.form
    async with api(request, principal) as client:
        try:
            state = await client.threads.get_state(thread_id)
        except httpx.HTTPStatusError as exc:
            return _problem(request, principal, 404, _not_found(exc))
        interrupts = state.get("interrupts") or []
        if not interrupts or interrupts[0]["id"] != form.get("interrupt_id"):
            return _problem(
                request, principal, 409, "This question was answered meanwhile, in another tab or by someone else."
            )
        pending = interrupts[0]
        payload = pending.get("value") or {}
        if payload.get("kind") == "principles":
            return _problem(request, principal, 409, HELD_ELSEWHERE)
        if not principal.can("reviewer"):
            return _problem(request, principal, 403, NOT_A_REVIEWER)
        thread = await client.threads.get(thread_id)
        try:
            resume = _review_answer(form, (payload.get("judge") or {}).get("values") or [])
        except ValidationError as exc:
            return render(
                request,
                "case.html",
                status_code=422,
                principal=principal,
                thread_id=thread_id,
                pending=pending,
                errors=_field_errors(exc),
                answer=dict(form),
                max_chars=MAX_FIELD_CHARS,
            )
        judge = await _thread_judge(client, thread)
        try:
            out = await client.runs.wait(
                thread_id,
                "review",
                command={"resume": {pending["id"]: resume}},
                context={"judge": judge} if judge else None,
                raise_error=False,
            )
        except httpx.HTTPStatusError as exc:  # the server's authorisation refused the resume
            message = f"The server refused the answer ({refusal(exc.response)})."
            return _problem(request, principal, exc.response.status_code, message)
    if isinstance(out, dict) and "__error__" in out:
        error = out["__error__"]
        message = f"The server refused the answer: {error.get('error')}: {error.get('message')}"
        return _problem(request, principal, 502, message)
    return RedirectResponse(request.url_for("case", thread_id=thread_id).path, status_code=303)


HELD_ELSEWHERE = "Held principles are decided by another expert, on the judge's principles page."


async def _judge_of(request: Request, principal: Principal) -> str | None:
    """The path's judge, if it is served here and the user is an approver who may use it."""
    judge = request.path_params["judge"]
    if judge not in served_judges() or not may_use(principal.user, judge) or not principal.can("approver"):
        return None
    return judge


@page
async def held_principles(request: Request, principal: Principal) -> Response:
    """A judge's principles held for approval that the user may approve, with approve / reject for each."""
    judge = await _judge_of(request, principal)
    if judge is None:
        return _problem(request, principal, 404, "No held principles of this judge for you to decide.")
    async with api(request, principal) as client:
        answer = await _principles(client, judge)
    if "error" in answer:
        return _problem(request, principal, 502, f"The server could not list them ({answer['error']}).")
    proposals = [p for p in answer.get("pending") or () if p.get("may_approve")]
    return render(request, "principles.html", principal=principal, judge=judge, proposals=proposals)


@page
async def decide(request: Request, principal: Principal) -> Response:
    """Apply the form's decisions through the served ``principles`` graph (which checks them); show what changed."""
    judge = await _judge_of(request, principal)
    if judge is None:
        return _problem(request, principal, 404, "No held principles of this judge for you to decide.")
    form: FormData = request.state.form
    ids = [key.removeprefix("decision-") for key in form if key.startswith("decision-")]
    try:
        decisions = principles_answer_model(ids)(
            approve=[i for i in ids if form.get(f"decision-{i}") == "approve"],
            reject=[i for i in ids if form.get(f"decision-{i}") == "reject"],
        ).model_dump(exclude_none=True)
    except ValidationError as exc:
        return _problem(request, principal, 422, "; ".join(_field_errors(exc)))
    if not decisions["approve"] and not decisions["reject"]:
        return _problem(request, principal, 422, "Approve or reject at least one principle.")
    async with api(request, principal) as client:
        answer = await _principles(client, judge, decisions)
    if "error" in answer:
        return _problem(request, principal, 403, f"The server refused the decisions ({answer['error']}).")
    return render(request, "decided.html", principal=principal, judge=judge, decision=answer.get("decision") or {})


routes = [
    Route("/", queue, name="queue", methods=["GET"]),
    Route("/principles/{judge:str}", held_principles, name="principles", methods=["GET"]),
    Route("/principles/{judge:str}", decide, name="decide", methods=["POST"]),
    Route("/sign-in", sign_in, name="sign_in", methods=["POST"]),
    Route("/sign-out", sign_out, name="sign_out", methods=["POST"]),
    Route("/case/{thread_id:str}", case, name="case", methods=["GET"]),
    Route("/case/{thread_id:str}", answer, name="answer", methods=["POST"]),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]

app = Starlette(routes=[Mount("/review", routes=routes, middleware=[Middleware(Guard)])])
"""The app ``langgraph.json`` mounts (``"http": {"app": "memalign_graph.webreview.app:app"}``)."""
