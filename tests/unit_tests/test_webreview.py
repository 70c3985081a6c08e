"""The review page's parts that need no server: escaping, queue thread ids, sign-in, CSRF and the cross-site guard."""

from __future__ import annotations

import json
import re

import pytest
from starlette.testclient import TestClient

from memalign_graph.webreview import queue_cases, queue_key
from memalign_graph.webreview.app import MAX_FORM_BYTES, app, reveal


def test_reveal_escapes_markup_and_shows_hidden_characters():
    shown = str(reveal('<img src=x onerror="alert(1)"> pass\u202eliaf & \u200b\x1b'))
    assert "<img" not in shown and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in shown and "&amp;" in shown
    assert [m for m in re.findall(r"U\+[0-9A-F]{4}", shown)] == ["U+202E", "U+200B", "U+001B"]
    assert "\u202e" not in shown and "\u200b" not in shown and "\x1b" not in shown


def test_queue_key_is_stable_per_judge_and_case():
    case = {"inputs": "a", "outputs": "b"}
    assert queue_key("sql", case) == queue_key("sql", dict(case))
    assert queue_key("sql", case) != queue_key("tone", case)
    assert queue_key("sql", {**case, "id": "q-1"}) != queue_key("sql", {**case, "id": "q-2"})


@pytest.mark.parametrize("bad", [["not an object"], [{"inputs": "only inputs"}]])
def test_queue_refuses_a_malformed_case_before_sending_anything(bad):
    with pytest.raises(ValueError, match=r"case 2: expected an object with 'inputs' and 'outputs'"):
        queue_cases([{"inputs": "a", "outputs": "b"}, *bad], url="http://127.0.0.1:9")


@pytest.fixture
def page(tmp_path, monkeypatch):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"alice-token": {"user": "alice", "judges": ["sql"]}}))
    monkeypatch.setenv("MEMALIGN_AUTH_TOKENS", str(tokens))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def csrf(page_text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_text).group(1)


def test_sign_in_needs_the_form_token_and_a_valid_token(page):
    form = page.get("/review/")
    assert form.status_code == 401 and 'type="password"' in form.text
    headers = form.headers
    assert headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'; style-src 'self'")
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert page.post("/review/sign-in", data={"token": "alice-token"}).status_code == 403
    wrong = page.post("/review/sign-in", data={"token": "guess", "csrf_token": csrf(form.text)})
    assert wrong.status_code == 401 and "not valid" in wrong.text and "memalign_review_token" not in page.cookies
    signed = page.post(
        "/review/sign-in", data={"token": "alice-token", "csrf_token": csrf(form.text)}, follow_redirects=False
    )
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert "memalign_review_token=alice-token" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_cross_site_requests_other_than_navigation_are_refused(page):
    token = csrf(page.get("/review/").text)
    for headers in ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"}, {"sec-fetch-site": "same-site"}):
        refused = page.post("/review/sign-in", data={"token": "alice-token", "csrf_token": token}, headers=headers)
        assert refused.status_code == 403 and refused.text == "cross-site request refused"
        assert "content-security-policy" in refused.headers
    read = page.get("/review/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"})
    assert read.status_code == 403  # another site's fetch() cannot read the page
    link = page.get("/review/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
    assert link.status_code == 401 and "Sign in" in link.text  # a link from elsewhere still opens it


def test_an_oversized_or_undecodable_form_is_refused(page):
    token = csrf(page.get("/review/").text)
    page.post("/review/sign-in", data={"token": "alice-token", "csrf_token": token}, follow_redirects=False)
    big = page.post("/review/sign-out", content=b"x" * (MAX_FORM_BYTES + 1))
    assert big.status_code == 400 and "could not be read" in big.text
    latin = page.post("/review/sign-out", content=b"csrf_token=" + token.encode() + b"&x=%ff")
    assert latin.status_code == 400


def test_every_template_and_static_file_ships_in_the_wheel():
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = root / "memalign_graph" / "webreview"
    shipped = globs["memalign_graph.webreview"]
    files = [p.relative_to(package).as_posix() for p in package.glob("*/*") if p.parent.name in ("templates", "static")]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in shipped) for f in files), files
