"""Who may use the served graphs, and which judges: LangGraph Server authentication and authorisation.

``langgraph.json`` names this module's :data:`auth` (``"auth": {"path": ...}``), so LangGraph
Server (and ``langgraph dev``) runs :func:`authenticate` on every request and the ``@auth.on``
handlers before every action.

Authentication:

- With ``MEMALIGN_AUTH_TOKENS`` set to the path of a JSON file, a request needs
  ``Authorization: Bearer <token>`` with a token the file lists::

      {"sha256:<hex SHA-256 of the token>": {"user": "alice", "judges": ["sql"],
                                              "roles": ["reviewer", "approver"]},
       "<the token itself>": {"user": "bob", "judges": ["*"]}}

  ``judges`` are names of judges the server exposes (``MEMALIGN_JUDGES``), ``"*"`` for all.
  ``roles`` are what the user may do besides judging (:data:`ROLES`; what each allows is
  decided in :mod:`memalign_graph.duties`): ``reviewer`` answers reviews and sends
  feedback, ``approver`` approves or rejects proposed principles (never those from their
  own feedback), ``admin`` may replace another author's feedback record.
  Without ``roles`` a user is a ``reviewer`` only (:data:`DEFAULT_ROLES`), which is what every
  token could do before roles existed, less approving; ``[]`` allows judging only.
  Prefer the ``sha256:`` form: the file then holds no usable secret. The file is re-read
  when it changes (no restart to add or revoke a token).
- Without it, only requests from the loopback interface are served, as user ``local``
  with every judge and every role; any other request is refused (401). Loopback is read
  from the connection, never from a header: the request's local address (ASGI ``server``,
  which proxy-header handling such as uvicorn's ``FORWARDED_ALLOW_IPS`` never rewrites) and
  its peer (``client``) must both be loopback, and a request carrying a forwarding header
  (``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``, ...) came through a proxy, so it is not
  local. Nor is a request a web page made: one whose ``Host`` is not a loopback name (a
  DNS-rebound name), or whose ``Origin`` (or, without one, ``Sec-Fetch-Site``) says another
  site sent it, LangGraph Studio's own origins (:data:`STUDIO_ORIGINS`) excepted; the
  server's CORS settings (``langgraph.json``) let no other site read its answers either. A
  reverse proxy on the same machine that adds no forwarding header makes every request
  look local: set a token file there.

The authenticated user's permissions are ``judge:<name>`` and ``role:<name>`` strings;
:func:`identify` gives the same user as a :class:`ServedUser` to code outside an Auth
handler (a custom HTTP route), and :func:`may_use` and :func:`has_role` read either.

Authorisation (anything not listed is denied, 403):

- threads: a user creates, reads, updates, searches and deletes only threads they own
  (``metadata.owner``, set from the authenticated identity at creation, never changed by a
  client). Another user's thread is not found, and not even its existence shows: a client
  names a new thread (``POST /threads`` with a ``thread_id``, or a run with
  ``if_not_exists: "create"``) only with an id from its own id space (:func:`thread_id`) or
  one of its own threads; any other id is refused alike (403) whether a thread has it or
  not. Ids the server makes (no ``thread_id``) are accepted when made within
  :data:`MINTED_WITHIN_S` seconds; in that window only, a user who presents another user's
  new thread id learns that it exists (409), never its contents;
- runs: created only on the user's own threads, and only for a judge the user may use
  (the run context's ``judge``, or the server's only judge); the authenticated identity is
  what the graphs record as author and reviewer;
- assistants: read and searched (the server's graphs); never created, changed or deleted,
  so no assistant can carry another context;
- store: read only, in namespaces ``("memalign", J, ...)`` of the server's own store where a
  judge the user may use keeps its memory (``MEMALIGN_JUDGES`` location ``langgraph``: ``J`` is
  the judge's name, ``.`` and ``%`` percent-encoded; ``langgraph:NAME``: ``NAME``); a judge whose
  memory is elsewhere has nothing to read there. Listing namespaces above one judge (no prefix,
  or ``["memalign"]``, as Studio's memory view does) lists the user's own judges' namespaces and
  never names another judge: it is served whole when every judge in the store is the user's,
  narrowed to the user's judge when the store holds one of theirs, and otherwise refused (403)
  with the prefixes the user may list, ``["memalign", J]``, one per judge of theirs;
- crons: denied.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from langgraph_sdk import Auth, get_client

from memalign_graph.context import served_judge_name, served_store_judges, store_judge_names
from memalign_graph.duties import REVIEWER, ROLES

auth = Auth()

ALL_JUDGES = "*"
LOCAL_USER = "local"
DEFAULT_ROLES: tuple[str, ...] = (REVIEWER,)
MINTED_WITHIN_S = 10.0
"""A UUIDv7 thread id made this many seconds ago or less counts as made by the server for this request."""
FORWARDING_HEADERS: frozenset[bytes] = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-real-ip", b"x-client-ip", b"true-client-ip", b"cf-connecting-ip"}
)
STUDIO_ORIGINS: frozenset[str] = frozenset({"https://smith.langchain.com", "https://eu.smith.langchain.com"})
"""Web origins of LangGraph Studio: the one other site a tokenless server answers, as ``langgraph.json``'s CORS says."""
LOOPBACK_NAMES: frozenset[str] = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class ServedUser:
    """Who a request comes from: an identity, the judges it may use and its roles.

    Attributes:
        identity: the user's name (``"local"`` for a tokenless loopback request).
        judges: judge names the user may use, or ``("*",)`` for all.
        roles: a subset of :data:`ROLES`.
    """

    identity: str
    judges: tuple[str, ...]
    roles: tuple[str, ...]

    @property
    def permissions(self) -> list[str]:
        """``judge:<name>`` and ``role:<name>`` strings, as LangGraph Server carries them."""
        return [*(f"judge:{j}" for j in self.judges), *(f"role:{r}" for r in self.roles)]


_tokens_lock = threading.Lock()
_tokens_cache: tuple[tuple[str, int, int], dict[str, dict[str, Any]]] | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_tokens(path: str | Path) -> dict[str, dict[str, Any]]:
    """The token file at ``path`` as ``{sha256 hex of token: {"user": str, "judges": [str], "roles": [str]}}``.

    An entry without ``roles`` gets :data:`DEFAULT_ROLES`.

    Raises:
        ValueError: if the file cannot be read or is not a JSON object of entries with a
            non-empty ``user``, a list of ``judges`` and, if given, a list of ``roles`` from
            :data:`ROLES`; the message names the file and the entry's position and user,
            never a token.
    """
    where = f"MEMALIGN_AUTH_TOKENS file {path}"
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected a JSON object {{"token or sha256:HEX": {{"user", "judges", "roles"}}}}')
    tokens: dict[str, dict[str, Any]] = {}
    for position, (key, entry) in enumerate(raw.items(), 1):
        user = entry.get("user") if isinstance(entry, dict) else None
        judges = entry.get("judges") if isinstance(entry, dict) else None
        if not isinstance(user, str) or not user.strip():
            raise ValueError(f"{where}: entry {position} needs a non-empty 'user'")
        if not isinstance(judges, list) or not all(isinstance(j, str) and j for j in judges):
            raise ValueError(f"{where}: entry {position} (user {user!r}) needs 'judges', a list of judge names or '*'")
        roles = entry.get("roles", list(DEFAULT_ROLES))
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValueError(f"{where}: entry {position} (user {user!r}) needs 'roles', a list of {', '.join(ROLES)}")
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            said = f"has unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}"
            raise ValueError(f"{where}: entry {position} (user {user!r}) {said}")
        if not key:
            raise ValueError(f"{where}: entry {position} (user {user!r}) has an empty token")
        digest = key.removeprefix("sha256:").lower() if key.startswith("sha256:") else _digest(key)
        tokens[digest] = {"user": user, "judges": list(judges), "roles": list(dict.fromkeys(roles))}
    return tokens


def _tokens(path: str) -> dict[str, dict[str, Any]]:
    global _tokens_cache
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ValueError(f"MEMALIGN_AUTH_TOKENS file {path}: cannot be read ({exc.strerror})") from None
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _tokens_lock:
        if _tokens_cache is None or _tokens_cache[0] != key:
            _tokens_cache = (key, load_tokens(path))
        return _tokens_cache[1]


def _loopback_address(host: Any) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def is_local(scope: Mapping[str, Any]) -> bool:
    """Whether an ASGI request came over the loopback interface, not through a proxy nor for another site's page.

    Both ends of the connection must be loopback: ``server`` (the local address the
    request arrived on; proxy-header middleware rewrites ``client`` but never ``server``,
    and a packet to a loopback address comes from this machine) and ``client``. A request
    with a forwarding header (:data:`FORWARDING_HEADERS`) is not local, whatever the
    addresses say: it was relayed, and uvicorn with ``FORWARDED_ALLOW_IPS='*'`` would have
    put the header's address in ``client``. Nor is one a browser sent for a page of another
    site (see :func:`_from_a_web_page`): this machine's browser is on loopback too.
    """
    client, server = scope.get("client"), scope.get("server")
    if not client or not server or not _loopback_address(client[0]) or not _loopback_address(server[0]):
        return False
    headers = {name.lower(): value.decode("latin-1") for name, value in scope.get("headers") or ()}
    if FORWARDING_HEADERS & set(headers):
        return False
    return not _from_a_web_page(headers)


def _loopback_name(url: str) -> bool:
    try:
        name = urlsplit(url).hostname
    except ValueError:
        return False
    return name in LOOPBACK_NAMES or _loopback_address(name)


def _from_a_web_page(headers: Mapping[bytes, str]) -> bool:
    """Whether a browser sent this request for a page of another site, or under a name that is not loopback.

    ``Host`` must name loopback (else a DNS-rebound name such as ``evil.example`` resolving to
    127.0.0.1 would make another site's page same-origin with this server); ``Origin``, when a
    browser sends it, must be a loopback page or :data:`STUDIO_ORIGINS`; without ``Origin``,
    ``Sec-Fetch-Site`` must not say ``cross-site`` or ``same-site`` (an image or a plain link).
    """
    host = headers.get(b"host")
    if host is not None and not _loopback_name(f"//{host}"):
        return True
    origin = headers.get(b"origin")
    if origin is not None:
        return origin not in STUDIO_ORIGINS and not _loopback_name(origin)
    return headers.get(b"sec-fetch-site") in ("cross-site", "same-site")


def identify(authorization: str | None, scope: Mapping[str, Any]) -> ServedUser:
    """The user a request comes from, by its ``Authorization`` header and ASGI ``scope``.

    The same rules as :func:`authenticate` (see the module docstring), for code outside an
    Auth handler, such as a custom HTTP route, which passes its own request's scope.

    Args:
        authorization: the request's ``Authorization`` header, or ``None``.
        scope: the request's ASGI scope (``client``, ``server`` and ``headers`` are read when no
            token file is configured; see :func:`is_local`).

    Raises:
        Auth.exceptions.HTTPException: 401 for a missing or unknown token, or a non-loopback
            request when no token file is configured.
        ValueError: if the token file is unreadable or malformed.
    """
    path = os.environ.get("MEMALIGN_AUTH_TOKENS")
    if not path:
        if is_local(scope):
            return ServedUser(LOCAL_USER, (ALL_JUDGES,), ROLES)
        raise Auth.exceptions.HTTPException(
            status_code=401, detail="this server serves only local requests (no MEMALIGN_AUTH_TOKENS configured)"
        )
    scheme, _, token = (authorization or "").partition(" ")
    entry = _tokens(path).get(_digest(token.strip())) if scheme.lower() == "bearer" and token.strip() else None
    if entry is None:
        raise Auth.exceptions.HTTPException(status_code=401, detail="missing or unknown bearer token")
    return ServedUser(entry["user"], tuple(entry["judges"]), tuple(entry["roles"]))


@auth.authenticate
async def authenticate(authorization: str | None, scope: dict[str, Any]) -> Auth.types.MinimalUserDict:
    """The user a request comes from (see the module docstring and :func:`identify`).

    Raises:
        Auth.exceptions.HTTPException: 401 for a missing or unknown token, or a non-loopback
            request when no token file is configured.
        ValueError: if the token file is unreadable or malformed (the server answers 500).
    """
    user = identify(authorization, scope)
    return {"identity": user.identity, "is_authenticated": True, "permissions": user.permissions}


def _granted(user: ServedUser | Auth.types.AuthContext) -> set[str]:
    permissions: Iterable[str] = user.permissions or ()
    return set(permissions)


def may_use(user: ServedUser | Auth.types.AuthContext, judge: str) -> bool:
    """Whether ``user`` (from :func:`identify`, or an Auth handler's context) may use ``judge``."""
    granted = _granted(user)
    return f"judge:{ALL_JUDGES}" in granted or f"judge:{judge}" in granted


def has_role(user: ServedUser | Auth.types.AuthContext, role: str) -> bool:
    """Whether ``user`` (from :func:`identify`, or an Auth handler's context) has ``role`` (one of :data:`ROLES`).

    Raises:
        ValueError: if ``role`` is not one of :data:`ROLES` (a misspelt check would always say no).
    """
    if role not in ROLES:
        raise ValueError(f"{role!r} is not a role; roles are {', '.join(ROLES)}")
    return f"role:{role}" in _granted(user)


def _owner(ctx: Auth.types.AuthContext) -> dict[str, str]:
    return {"owner": ctx.user.identity}


@auth.on
async def deny_by_default(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """Everything no handler below allows is refused (403)."""
    return False


def _owner_tag(user: str) -> bytes:
    return hashlib.sha256(b"memalign-graph thread owner\x00" + user.encode("utf-8")).digest()[:6]


def thread_id(user: str, name: str | None = None) -> str:
    """A thread id in ``user``'s id space, the only client-chosen ids the served graphs accept for new threads.

    A UUID version 8 (RFC 9562) whose last 48 bits are a hash of ``user`` (so the server
    can tell whose space an id is in without storing anything) and whose other bits are a
    hash of ``user`` and ``name``, or random without a name. The same ``name`` always gives
    the same id, so a client can keep one thread per case: ``thread_id("alice", "case-1")``.

    Args:
        user: the identity the server knows the client as (the token file's ``user``).
        name: any text naming the thread, or ``None`` for a new random id.
    """
    if name is None:
        body = os.urandom(10)
    else:
        body = hashlib.sha256(b"memalign-graph thread\x00" + f"{user}\x00{name}".encode()).digest()[:10]
    raw = bytearray(body + _owner_tag(user))
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8 (uuid.UUID(version=8) needs Python 3.14)
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def in_id_space(user: str, tid: Any) -> bool:
    """Whether ``tid`` is a thread id from ``user``'s id space (made by :func:`thread_id`)."""
    try:
        parsed = uuid.UUID(str(tid))
    except ValueError:
        return False
    return parsed.version == 8 and parsed.bytes[10:] == _owner_tag(user)


def _minted_now(tid: Any) -> bool:
    """Whether ``tid`` is a UUIDv7 made in the last :data:`MINTED_WITHIN_S` seconds, as the server makes them."""
    try:
        parsed = uuid.UUID(str(tid))
    except ValueError:
        return False
    if parsed.version != 7:
        return False
    age_ms = time.time() * 1000 - int.from_bytes(parsed.bytes[:6], "big")
    return -1000 <= age_ms <= MINTED_WITHIN_S * 1000


_loopback_client: Any = None


async def _thread_owner(tid: Any) -> str | None:
    """The owner of the thread ``tid``, ``None`` if there is none (read in-process, past every Auth handler)."""
    global _loopback_client
    if _loopback_client is None:
        _loopback_client = get_client(url=None)
    try:
        thread = await _loopback_client.threads.get(str(tid))
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise
    owner = (thread.get("metadata") or {}).get("owner")
    return owner if isinstance(owner, str) else None


async def _may_name_thread(ctx: Auth.types.AuthContext, tid: Any) -> None:
    """Refuse a client-named new thread id outside the user's id space that is not one of the user's threads.

    The refusal is the same whether another user's thread has the id or none has: nothing
    tells a client that a thread it does not own exists.

    Raises:
        Auth.exceptions.HTTPException: 403 naming the id and how to make one.
    """
    identity = ctx.user.identity
    if in_id_space(identity, tid) or _minted_now(tid) or await _thread_owner(tid) == identity:
        return
    raise Auth.exceptions.HTTPException(
        status_code=403,
        detail=f"thread id {tid} is not one you may create: omit it (the server makes one) or make one in your"
        f" own id space with memalign_graph.auth.thread_id({identity!r}, name)",
    )


@auth.on.threads.create
async def create_thread(
    ctx: Auth.types.AuthContext, value: Auth.types.on.threads.create.value
) -> Auth.types.FilterType:
    """A new thread belongs to its creator, and has an id the creator may name (see the module docstring).

    A thread copy (no ``if_exists``: the server makes the copy's id) is checked only by the
    read handler on its source.

    Raises:
        Auth.exceptions.HTTPException: 403 for an id the user may not name.
    """
    if "if_exists" in value:
        await _may_name_thread(ctx, value.get("thread_id"))
    metadata = value.setdefault("metadata", {})
    if metadata is None:
        metadata = value["metadata"] = {}
    metadata["owner"] = ctx.user.identity
    return _owner(ctx)


@auth.on.threads.update
async def update_thread(
    ctx: Auth.types.AuthContext, value: Auth.types.on.threads.update.value
) -> Auth.types.FilterType:
    """The owner updates their own thread, and never its owner.

    Raises:
        Auth.exceptions.HTTPException: 403 when the owner sends metadata naming another
            ``owner``. Anyone else gets "not found", as for a thread that does not exist
            (LangGraph runs this handler only for an existing thread).
    """
    metadata = value.get("metadata") or {}
    if "owner" in metadata and metadata["owner"] != ctx.user.identity:
        if await _thread_owner(value.get("thread_id")) == ctx.user.identity:
            raise Auth.exceptions.HTTPException(status_code=403, detail="a thread's owner is set by the server")
        metadata["owner"] = ctx.user.identity
    return _owner(ctx)


@auth.on.threads.read
@auth.on.threads.delete
@auth.on.threads.search
async def own_threads(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    """Threads (their state, history and runs) are visible to their owner only."""
    return _owner(ctx)


@auth.on.threads.create_run
async def create_run(
    ctx: Auth.types.AuthContext, value: Auth.types.on.threads.create_run.value
) -> Auth.types.FilterType:
    """A run on the user's own thread, for a judge the user may use.

    A run that may create its thread (``if_not_exists: "create"``) names it like
    ``POST /threads`` does (see the module docstring).

    Raises:
        Auth.exceptions.HTTPException: 403 naming the judge the user may not use, the
            problem with the run context's ``judge``, or a thread id the user may not name.
    """
    kwargs = value.get("kwargs") or {}
    context = kwargs.get("context") or {}
    judge = context.get("judge") if isinstance(context, dict) else None
    if judge is not None and not isinstance(judge, str):
        raise Auth.exceptions.HTTPException(status_code=403, detail="run context 'judge' must be a judge name")
    try:
        name = served_judge_name(judge)
    except ValueError as exc:
        raise Auth.exceptions.HTTPException(status_code=403, detail=str(exc)) from None
    if not may_use(ctx, name):
        raise Auth.exceptions.HTTPException(
            status_code=403, detail=f"user {ctx.user.identity!r} may not use judge {name!r}"
        )
    if value.get("thread_id") is not None and value.get("if_not_exists") == "create":
        await _may_name_thread(ctx, value["thread_id"])
    metadata = value.get("metadata")
    if metadata is None:
        metadata = value["metadata"] = {}
    metadata["owner"] = ctx.user.identity
    return _owner(ctx)


@auth.on.assistants.read
@auth.on.assistants.search
async def read_assistants(ctx: Auth.types.AuthContext, value: Any) -> None:
    """The served graphs' assistants are public to authenticated users (their schemas, their defaults)."""


async def _stored_judge_labels() -> set[str]:
    """The namespace labels of every judge in the server's store.

    Read from the server's store object (this handler runs inside LangGraph Server): an
    in-process API call to ``/store/namespaces`` from a store handler never returned under
    ``langgraph dev`` (langgraph-api 0.16.7).
    """
    from langgraph_api.store import get_store

    store = await get_store()
    labels: set[str] = set()
    offset, page = 0, 1000
    while True:
        found = await store.alist_namespaces(prefix=("memalign",), max_depth=2, limit=page, offset=offset)
        labels.update(ns[1] for ns in found if len(ns) >= 2)
        if len(found) < page:
            return labels
        offset += page


async def _list_own_judges(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """Let a listing above one judge through only as far as it shows the user's own judges (module docstring).

    Raises:
        Auth.exceptions.HTTPException: 403 naming the prefixes the user may list, when the store
            holds several of the user's judges and others'.
    """
    from memalign_graph.backends.names import store_label

    try:
        judges = store_judge_names()
    except ValueError:
        return False
    own = {store_label(stored) for name, stored in judges.items() if may_use(ctx, name)}
    if not own:
        return False
    present = await _stored_judge_labels()
    if present <= own:
        value["namespace"] = ("memalign",)
        return True
    visible = sorted(own & present) or sorted(own)
    if len(visible) == 1:
        value["namespace"] = ("memalign", visible[0])
        return True
    prefixes = ", ".join(json.dumps(["memalign", label], ensure_ascii=False) for label in visible)
    raise Auth.exceptions.HTTPException(
        status_code=403, detail=f"list the namespaces of one of your judges at a time: prefix {prefixes}"
    )


@auth.on.store
async def read_own_judges_store(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """Store access: read only, within ``("memalign", judge, ...)`` of a judge the user may use.

    Raises:
        Auth.exceptions.HTTPException: 403 for a namespace listing above one judge that cannot
            be narrowed to the user's own judges (see the module docstring).
    """
    if ctx.action not in ("get", "search", "list_namespaces"):
        return False
    namespace = tuple(value.get("namespace") or ())
    if ctx.action == "list_namespaces" and namespace in ((), ("memalign",)):
        return await _list_own_judges(ctx, value)
    if len(namespace) < 2 or namespace[0] != "memalign":
        return False
    from memalign_graph.backends.names import judge_from_label

    try:
        served = served_store_judges(judge_from_label(namespace[1]))
    except ValueError:
        return False
    return any(may_use(ctx, name) for name in served)
