"""The served graphs' trust boundary and Studio forms, in process (no server; see tests/security/test_served.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from langgraph_sdk import Auth

from memalign_graph import Memory, build_align_graph, build_judge_graph, build_review_graph
from memalign_graph.auth import authenticate, create_run, load_tokens, read_own_judges_store
from memalign_graph.backends.postgres import redact
from memalign_graph.context import Context, ServedContext, served_context, served_judge_name, served_judges
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, tree_bytes

BUILDERS = {"judge": build_judge_graph, "review": build_review_graph, "align": build_align_graph}
SERVER_ONLY = {"model", "base_url", "embeddings", "memory_dir", "store", "author"}


@pytest.mark.parametrize("served", [False, True], ids=["library", "served"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_compiled_graphs_have_typed_described_schemas(name: str, served: bool) -> None:
    graph = BUILDERS[name](served=served).compile()
    schemas = {
        "input": graph.get_input_jsonschema(),
        "output": graph.get_output_jsonschema(),
        "context": graph.get_context_jsonschema(),
    }
    for kind, schema in schemas.items():
        assert schema and schema["properties"], kind
        assert all(p.get("description") for p in schema["properties"].values()), (kind, schema["properties"])
    context = schemas["context"]["properties"]
    if served and name == "align":  # judging and review options do not apply to alignment
        assert set(context) == {"judge"}
    else:
        assert context["precedent"]["enum"] == ["exact", "similar", "off"]
    if name == "review":
        assert context["review"]["enum"] == ["all", "none", "unsure", "sample"]
    elif served:
        assert "review" not in context and "store_accepted" not in context
    if served:
        assert "judge" in context and not SERVER_ONLY & set(context)
    else:
        assert context["structured_output"]["enum"] == [
            "auto",
            "json_schema",
            "function_calling",
            "json_mode",
            "prompt",
        ]
        assert context["model"]["type"] == ["string", "null"]
    if name == "align":
        assert ("author" in schemas["input"]["properties"]) is not served
    else:
        assert {"inputs", "outputs", "id", "expectations"} == set(schemas["input"]["properties"])
        assert "judgment" in schemas["output"]["properties"]
        assert ("episodes" in schemas["output"]["properties"]) is served


@pytest.mark.parametrize("served", [False, True], ids=["library", "served"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_context_forms_are_what_studio_showed_before(name: str, served: bool) -> None:
    """Each context field's form (order, type, default, description) as recorded in context_schemas.json.

    A field changed on purpose is recorded anew there; the served options are said once for both
    schemas (context.py), so a change reaches both.
    """
    recorded = json.loads((Path(__file__).parent / "context_schemas.json").read_text(encoding="utf-8"))
    properties = BUILDERS[name](served=served).compile().get_context_jsonschema()["properties"]
    expected = recorded[f"served-{name}" if served else "library"]
    assert list(properties) == list(expected)
    assert properties == expected


def test_the_schemas_never_show_the_servers_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMALIGN_STORE", "postgresql://u:hunter2@db/x?judge=j")
    monkeypatch.setenv("MEMALIGN_MODEL", "openai:secret-model")
    for build in BUILDERS.values():
        text = json.dumps(build(served=True).compile().get_context_jsonschema())
        assert "hunter2" not in text and "secret-model" not in text


def test_served_context_takes_only_judge_and_options_from_the_client(tmp_path: Path) -> None:
    env = {
        "MEMALIGN_JUDGES": json.dumps({"sql": str(tmp_path / "sql"), "tone": str(tmp_path / "tone")}),
        "MEMALIGN_MODEL": "stub",
        "MEMALIGN_BASE_URL": "http://models.internal/v1",
        "MEMALIGN_EMBEDDINGS": "minilm",
    }
    hostile = {"judge": "sql", "k": 2, "model": "x", "base_url": "http://attacker/v1", "store": str(tmp_path / "tone")}
    ctx = served_context(hostile, author="alice", environ=env)
    assert (ctx.store, ctx.memory_dir) == (str(tmp_path / "sql"), None)
    assert (ctx.model, ctx.base_url, ctx.embeddings) == ("stub", "http://models.internal/v1", "minilm")
    assert (ctx.k, ctx.author) == (2, "alice")
    assert served_context(ServedContext(judge="tone"), environ=env).author == "anonymous"
    with pytest.raises(ValueError, match="'nope' is not served here"):
        served_context({"judge": "nope"}, environ=env)
    with pytest.raises(ValueError, match="several judges"):
        served_context(None, environ=env)


def test_one_judge_without_memalign_judges(tmp_path: Path) -> None:
    assert served_judges({"MEMALIGN_STORE": "s", "MEMALIGN_MEMORY_DIR": "d"}) == {"default": "s"}
    assert served_judges({"MEMALIGN_MEMORY_DIR": "d"}) == {"default": "d"}
    assert served_judge_name(None, {}) == "default"
    listed = tmp_path / "judges.json"
    listed.write_text(json.dumps({"a": "/srv/a"}))
    assert served_judges({"MEMALIGN_JUDGES": str(listed)}) == {"a": "/srv/a"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"a": ', "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"a": ""}', "judge 'a' needs"),
        ("{}", "expected a JSON object"),
        ("/no/such/file.json", "cannot be read"),
    ],
)
def test_bad_judge_lists_are_named_without_their_locations(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        served_judges({"MEMALIGN_JUDGES": value})
    assert "MEMALIGN_JUDGES" in str(raised.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("k", 1000, "outside"),
        ("k", "5", "expected int"),
        ("precedent", "always", "not one of"),
        ("review", "never", "not one of"),
        ("review_sample_rate", 2.0, "outside"),
        ("use_episodes", "yes", "true or false"),
        ("judge", "", "judge name"),
    ],
)
def test_served_context_refuses_values_out_of_range(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"'{field}'.*{message}|{message}"):
        ServedContext(**{field: value})


def test_redact_covers_query_passwords() -> None:
    assert redact("postgresql://u:pw@h:5/db?judge=a") == "postgresql://u:***@h:5/db?judge=a"
    assert redact("postgresql://u@h/db?password=s3&judge=a") == "postgresql://u@h/db?password=***&judge=a"
    assert redact("postgresql://h/db?sslmode=require&SSLPassword=k&judge=x") == (
        "postgresql://h/db?sslmode=require&SSLPassword=***&judge=x"
    )
    assert redact("postgresql://h/db?pass%77ord=abc") == "postgresql://h/db?pass%77ord=***"
    assert "zz" not in redact("postgresql://[::1/db?password=zz")
    assert redact("postgresql://h/db?judge=a") == "postgresql://h/db?judge=a"


@pytest.fixture
def served_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("the embedded embedder (onnxruntime) is not installed")
    judges = {"sql": str(tmp_path / "sql"), "tone": str(tmp_path / "tone")}
    for name, rule in (("sql", "Never use raw tables."), ("tone", "Never shout.")):
        Memory.create(judges[name], CATEGORICAL)
        Memory.open(judges[name]).align(
            [{"id": f"{name}-1", "inputs": "q", "outputs": "o", "value": "fail", "feedback": rule}],
            model=StubChatModel(),
        )
    monkeypatch.setenv("MEMALIGN_JUDGES", json.dumps(judges))
    monkeypatch.setenv("MEMALIGN_MODEL", "stub")
    monkeypatch.delenv("MEMALIGN_EMBEDDINGS", raising=False)
    monkeypatch.delenv("MEMALIGN_BASE_URL", raising=False)
    return judges


def test_served_graph_streams_each_nodes_update(served_env: dict[str, str]) -> None:
    graph = build_judge_graph(served=True).compile()
    case = {"id": "c-1", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}
    updates = {}
    for chunk in graph.stream(case, context=ServedContext(judge="sql"), stream_mode="updates"):
        updates.update(chunk)
    sql = Memory.open(served_env["sql"])
    assert [p["id"] for p in updates["retrieve_principles"]["principles"]] == [p["id"] for p in sql.principles]
    assert [e["id"] for e in updates["retrieve_episodes"]["episodes"]] == ["sql-1"]
    assert updates["judge"]["judgment"]["model"] == "stub"


def test_served_align_records_the_identity_not_the_input_author(served_env: dict[str, str]) -> None:
    tone_before = tree_bytes(Path(served_env["tone"]))
    graph = build_align_graph(served=True).compile()
    feedback = [{"id": "fb-9", "inputs": "q", "outputs": "SELECT *", "value": "fail", "feedback": "No star."}]
    out = graph.invoke({"feedback": feedback, "author": "mallory"}, context=ServedContext(judge="sql"))
    assert out["report"]["added"] == ["fb-9"]
    assert Memory.open(served_env["sql"]).backend.versions()[-1]["author"] == "anonymous"
    assert tree_bytes(Path(served_env["tone"])) == tone_before


def test_library_graphs_keep_the_full_context(served_env: dict[str, str]) -> None:
    graph = build_align_graph().compile()
    feedback = [{"id": "fb-1", "inputs": "q", "outputs": "SELECT *", "value": "fail", "feedback": "No star."}]
    graph.invoke({"feedback": feedback, "author": "carol"}, context=Context(store=served_env["tone"], model="stub"))
    assert Memory.open(served_env["tone"]).backend.versions()[-1]["author"] == "carol"


def _auth_ctx(
    identity: str, judges: list[str], resource: str = "threads", action: str = "create_run"
) -> Auth.types.AuthContext:
    return Auth.types.AuthContext(
        permissions=[f"judge:{j}" for j in judges],
        user=SimpleNamespace(identity=identity),  # type: ignore[arg-type]
        resource=resource,  # type: ignore[arg-type]
        action=action,  # type: ignore[arg-type]
    )


async def test_tokens_authenticate_users_and_a_bad_file_names_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "sha256:" + hashlib.sha256(b"tok-a").hexdigest(): {"user": "alice", "judges": ["sql"]},
                "tok-b": {"user": "bob", "judges": ["*"]},
            }
        )
    )
    monkeypatch.setenv("MEMALIGN_AUTH_TOKENS", str(tokens))
    remote = {"client": ("10.1.2.3", 5000)}
    assert (await authenticate("Bearer tok-a", remote))["identity"] == "alice"
    assert (await authenticate("bearer tok-b", remote))["permissions"] == ["judge:*", "role:reviewer"]
    for header in (None, "", "Bearer", "Bearer tok-c", "Basic tok-a", "tok-a"):
        with pytest.raises(Auth.exceptions.HTTPException) as raised:
            await authenticate(header, {"client": ("127.0.0.1", 5000)})
        assert raised.value.status_code == 401
    tokens.write_text(json.dumps({"tok-secret-x": {"user": "", "judges": []}}))
    with pytest.raises(ValueError, match="entry 1 needs a non-empty 'user'") as raised_bad:
        load_tokens(tokens)
    assert "tok-secret-x" not in str(raised_bad.value)


async def test_without_a_token_file_only_loopback_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMALIGN_AUTH_TOKENS", raising=False)
    for host in ("127.0.0.1", "::1"):
        user = await authenticate(None, {"client": (host, 1), "server": (host, 2024)})
        assert (user["identity"], user["permissions"]) == (
            "local",
            ["judge:*", "role:reviewer", "role:approver", "role:admin"],
        )
    for scope in ({"client": ("192.168.1.20", 1)}, {"client": None}, {}):
        with pytest.raises(Auth.exceptions.HTTPException) as raised:
            await authenticate("Bearer anything", scope)
        assert raised.value.status_code == 401


async def test_run_creation_is_owner_scoped_and_judge_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMALIGN_JUDGES", json.dumps({"sql": "/srv/sql", "tone": "/srv/tone"}))
    value = {"kwargs": {"context": {"judge": "sql"}}, "metadata": {"owner": "mallory"}}
    assert await create_run(_auth_ctx("alice", ["sql"]), value) == {"owner": "alice"}
    assert value["metadata"]["owner"] == "alice"
    for judges, context, message in (
        (["tone"], {"judge": "sql"}, "may not use judge 'sql'"),
        (["*"], {"judge": "other"}, "not served here"),
        (["*"], {}, "name one"),
        (["*"], {"judge": ["sql"]}, "must be a judge name"),
    ):
        with pytest.raises(Auth.exceptions.HTTPException, match=message) as raised:
            await create_run(_auth_ctx("bob", judges), {"kwargs": {"context": context}, "metadata": {}})
        assert raised.value.status_code == 403


async def test_store_access_is_read_only_within_allowed_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    judges = {"sql": "langgraph", "tone": "langgraph", "v1.2": "langgraph", "alias": "langgraph:shared", "files": "/m"}
    monkeypatch.setenv("MEMALIGN_JUDGES", json.dumps(judges))

    def ctx(action: str, allowed: tuple[str, ...] = ("sql",)) -> Auth.types.AuthContext:
        return _auth_ctx("alice", list(allowed), resource="store", action=action)

    assert await read_own_judges_store(ctx("search"), {"namespace": ("memalign", "sql", "principles")})
    assert await read_own_judges_store(ctx("get", ("v1.2",)), {"namespace": ("memalign", "v1%2E2", "episodes")})
    assert await read_own_judges_store(ctx("get", ("alias",)), {"namespace": ("memalign", "shared")})
    assert not await read_own_judges_store(ctx("get", ("alias",)), {"namespace": ("memalign", "alias")})
    assert not await read_own_judges_store(ctx("get", ("files",)), {"namespace": ("memalign", "files")})
    assert not await read_own_judges_store(ctx("get"), {"namespace": ("memalign", "tone")})
    assert not await read_own_judges_store(ctx("put"), {"namespace": ("memalign", "sql")})
    assert not await read_own_judges_store(ctx("delete"), {"namespace": ("memalign", "sql")})


async def test_listing_namespaces_shows_only_the_users_own_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Studio lists namespaces from ``["memalign"]`` (or none); each user sees their own judges, never others'."""
    judges = {"sql": "langgraph", "tone": "langgraph", "v1.2": "langgraph", "alias": "langgraph:shared", "files": "/m"}
    monkeypatch.setenv("MEMALIGN_JUDGES", json.dumps(judges))
    stored = {"sql", "tone", "v1%2E2", "shared"}

    async def stored_labels() -> set[str]:
        return set(stored)

    monkeypatch.setattr("memalign_graph.auth._stored_judge_labels", stored_labels)

    async def listing(allowed: list[str], prefix: tuple[str, ...] | None) -> tuple[str, ...] | None:
        value = {"namespace": prefix, "suffix": None, "max_depth": 3, "limit": 100, "offset": 0}
        assert await read_own_judges_store(
            _auth_ctx("alice", allowed, resource="store", action="list_namespaces"), value
        )
        assert value["max_depth"] == 3
        return value["namespace"]

    assert await listing(["sql"], ("memalign",)) == ("memalign", "sql")  # narrowed to the user's judge
    assert await listing(["sql"], None) == ("memalign", "sql")
    assert await listing(["*"], ("memalign",)) == ("memalign",)  # every judge in the store is theirs
    assert await listing(["alias", "files"], None) == ("memalign", "shared")
    stored.add("secret")  # a judge in the store no served name reaches
    for allowed, mine in ((["*"], ["shared", "sql", "tone", "v1%2E2"]), (["sql", "tone"], ["sql", "tone"])):
        with pytest.raises(Auth.exceptions.HTTPException) as raised:
            await listing(allowed, ("memalign",))
        assert raised.value.status_code == 403
        assert raised.value.detail == "list the namespaces of one of your judges at a time: prefix " + ", ".join(
            json.dumps(["memalign", label]) for label in mine
        )
    files_only = _auth_ctx("alice", ["files"], resource="store", action="list_namespaces")
    assert not await read_own_judges_store(files_only, {"namespace": ("memalign",)})
    assert not await read_own_judges_store(files_only, {"namespace": ("other-app",)})
