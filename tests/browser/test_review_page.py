"""The review page at ``/review`` as an expert uses it: a real Chromium against ``langgraph dev``.

One server for the module, serving four judges from memory directories and a token file:
alice reviews ``sql``, ``gov`` (principles held for approval) and ``xss``; bob reviews ``tone``;
carol approves for ``sql`` and ``gov``. Cases are queued with :func:`memalign_graph.webreview.queue_cases`,
as an engineer would. Set ``MEMALIGN_SCREENSHOT_DIR`` to keep the screenshots (the docs' come from here).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memalign_graph import JudgeSpec, Memory
from memalign_graph.testing import StubChatModel
from memalign_graph.webreview import queue_cases
from tests.browser.conftest import DESKTOP, PHONE
from tests.conftest import tree_bytes
from tests.dev_server import dev_server, requires_dev_server

pytestmark = requires_dev_server

TOKENS = {
    "alice": "alice-token-4f1c9e",
    "bob": "bob-token-77ad02",
    "carol": "carol-token-c3b5e1",
}
SQL = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("review-page")
    dirs = {name: root / name for name in ("sql", "gov", "xss", "docs", "tone")}
    for name, path in dirs.items():
        spec = (
            JudgeSpec.numeric("tone", "How well does the reply follow our tone rules?", 1, 5) if name == "tone" else SQL
        )
        Memory.create(path, spec)
    Memory.open(dirs["gov"]).set_principles_policy("review", author="admin")
    tokens = root / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                # alice approves too: her own feedback is never hers to approve, whatever her roles.
                TOKENS["alice"]: {
                    "user": "alice",
                    "judges": ["sql", "gov", "xss", "docs"],
                    "roles": ["reviewer", "approver"],
                },
                TOKENS["bob"]: {"user": "bob", "judges": ["tone"]},
                TOKENS["carol"]: {"user": "carol", "judges": ["sql", "gov"], "roles": ["reviewer", "approver"]},
            }
        )
    )
    env = {
        "MEMALIGN_JUDGES": json.dumps({name: str(path) for name, path in dirs.items()}),
        "MEMALIGN_MODEL": "stub",
        "MEMALIGN_AUTH_TOKENS": str(tokens),
    }
    with dev_server(env, root / "server.log") as url:
        yield {"url": url, "dirs": dirs, "log": root / "server.log"}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("MEMALIGN_SCREENSHOT_DIR") or tmp_path)


def sign_in(driver: Any, url: str, user: str) -> None:
    """Sign in through the form, by keyboard: the token field has focus, Enter sends it."""
    from selenium.webdriver.common.keys import Keys

    driver.delete_all_cookies()
    driver.get(f"{url}/review/")
    assert driver.title.startswith("Sign in")
    from selenium.webdriver.support.ui import WebDriverWait

    # The browser moves focus to an autofocus field at its next rendering step, not at load.
    WebDriverWait(driver, 10).until(lambda d: d.switch_to.active_element.get_attribute("id") == "token")
    driver.switch_to.active_element.send_keys(TOKENS[user], Keys.ENTER)
    wait_for_title(driver, "Review queue")


def wait_for_title(driver: Any, prefix: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, 30).until(lambda d: d.title.startswith(prefix))
    except Exception:
        main = driver.find_elements("tag name", "main") or driver.find_elements("tag name", "body")
        pytest.fail(f"expected page {prefix!r}, got {driver.title!r}: {main[0].text[:500] if main else ''}")


def press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    pytest.fail(f"a dialog opened: {text!r}")


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe_check(driver: Any, page: str) -> None:
    """axe-core (shipped by selenium-axe-python) on the current page: no WCAG 2.2 A/AA or best-practice violation."""
    from selenium_axe_python import Axe

    axe = Axe(driver)
    axe.inject()
    results = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
        ".then(r => done(r), e => done({error: String(e)}));",
        AXE_TAGS,
    )
    assert "error" not in results, f"{page}: axe failed: {results.get('error')}"
    assert results["violations"] == [], f"{page}: {axe.report(results['violations'])}"
    checked = {rule["id"] for rule in results["passes"]}
    assert "color-contrast" in checked, f"{page}: axe did not check contrast ({sorted(checked)})"
    if driver.find_elements("css selector", "input:not([type=hidden]), select, textarea"):
        assert "label" in checked, f"{page}: axe did not check labels"


def screenshot(driver: Any, folder: Path, name: str, *, phone: bool = True) -> None:
    """``review-NAME-desktop.png`` (and ``-phone.png``) of the current page in ``folder``."""
    for width_height, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")) if phone else ((DESKTOP, "desktop"),):
        driver.set_window_size(*width_height)
        driver.execute_script("window.scrollTo(0, 0)")
        path = folder / f"review-{name}-{suffix}.png"
        assert driver.save_screenshot(str(path)) and path.stat().st_size > 5000
    driver.set_window_size(*DESKTOP)


def field(page: str, name: str) -> str:
    """The value of the hidden form field ``name`` in ``page``."""
    return page.split(f'name="{name}" value="')[1].split('"')[0]


def queue_one(url: str, case_id: str, outputs: str, judge: str = "sql") -> str:
    """Alice queues one case for ``judge``; its thread id."""
    (row,) = queue_cases(
        [{"id": case_id, "inputs": "A report", "outputs": outputs}], url=url, judge=judge, token=TOKENS["alice"]
    )
    assert row["status"] == "queued", row
    return row["thread_id"]


def case_ids(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#cases-title ~ .queue .case-id")]


def test_expert_reviews_three_cases_by_keyboard(site, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url = site["url"]
    cases = [
        {"id": "q-1", "inputs": "Weekly revenue by region", "outputs": "SELECT region, sum(amount) FROM mart.revenue"},
        {
            "id": "q-2",
            "inputs": "Active customers",
            "outputs": "SELECT *\n  FROM raw.customers\n WHERE active = true  -- indentation kept",
        },
        {"id": "q-3", "inputs": "Refunds last week", "outputs": "SELECT count(*) FROM mart.refunds"},
    ]
    rows = queue_cases(cases, url=url, judge="sql", token=TOKENS["alice"], concurrency=1)
    assert [r["status"] for r in rows] == ["queued"] * 3
    assert [r["status"] for r in queue_cases(cases, url=url, judge="sql", token=TOKENS["alice"])] == [
        "queued before"
    ] * 3

    browser.delete_all_cookies()
    browser.get(f"{url}/review/")
    axe_check(browser, "sign-in")
    sign_in(browser, url, "alice")
    assert case_ids(browser)[:3] == ["q-1", "q-2", "q-3"]
    axe_check(browser, "queue")

    # Focus order from the top: skip link, home, sign out, then the first case.
    browser.get(f"{url}/review/")
    order = []
    for _ in range(4):
        press(browser, Keys.TAB)
        active = browser.switch_to.active_element
        order.append(active.text.split("\n")[0])
    assert order == ["Skip to content", "MemAlign review", "Sign out", "q-1"]
    press(browser, Keys.ENTER)
    wait_for_title(browser, "Case q-1")
    outputs = browser.find_elements(By.CSS_SELECTOR, "pre.text")[1]
    assert outputs.text == cases[0]["outputs"]
    axe_check(browser, "case")

    press(browser, "a")  # accept
    wait_for_title(browser, "Answered")
    assert "You accepted the judge's value pass" in browser.find_element(By.CLASS_NAME, "outcome").text
    WebDriverWait(browser, 10).until(lambda d: d.switch_to.active_element.get_attribute("id") == "next")
    axe_check(browser, "answered")
    press(browser, "n")

    wait_for_title(browser, "Case q-2")
    pre = browser.find_elements(By.CSS_SELECTOR, "pre.text")[1]
    assert pre.text == cases[1]["outputs"]  # line breaks and indentation kept
    press(browser, "c")  # correct: focus moves to the value
    assert browser.switch_to.active_element.get_attribute("id") == "value"
    press(browser, "f")  # typeahead picks "fail"
    press(browser, Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "feedback"
    words = "Never read raw tables; use the certified mart views."
    press(browser, words)
    ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    wait_for_title(browser, "Answered")
    outcome = browser.find_element(By.CLASS_NAME, "outcome").text
    assert "Corrected to fail (the judge said pass)" in outcome and words in outcome and "alice" in outcome
    assert browser.find_element(By.CSS_SELECTOR, ".facts .version").text == "1"
    new = browser.find_element(By.CSS_SELECTOR, ".new-principles").text
    press(browser, "n")

    wait_for_title(browser, "Case q-3")
    press(browser, "s")  # skip
    wait_for_title(browser, "Answered")
    assert "Skipped: nothing was stored." in browser.find_element(By.CLASS_NAME, "outcome").text
    press(browser, "n")
    wait_for_title(browser, "Review queue")
    assert not {"q-1", "q-2", "q-3"} & set(case_ids(browser))
    no_alert(browser)

    memory = Memory.open(site["dirs"]["sql"])
    assert memory.version == 1
    (episode,) = memory.episodes.get(["q-2"])
    assert episode["value"] == "fail" and episode["feedback"] == words
    assert memory.episodes.get(["q-1", "q-3"]) == []
    assert [(p["id"], p["text"]) for p in memory.principles] == [(new, words)]
    assert memory.records["q-2"]["author"] == "alice"


HOSTILE = (
    '<script>window.__pwned = 1; alert("script")</script>'
    '<img src="{attacker}/img" onerror="window.__pwned = 2; alert(\'img\')">'
    "<a href=\"javascript:alert('link')\">open me</a>"
    '<svg onload="alert(\'svg\')"></svg>"><iframe src="{attacker}/frame"></iframe>'
    '<link rel="stylesheet" href="{attacker}/css"><style>@import url({attacker}/import);</style>'
    '<meta http-equiv="refresh" content="0;url={attacker}/meta">'
    "{{{{ 7*7 }}}} ${{7*7}} "
    "pass\u202eliaf\u202c \u2066isolate\u2069 pa\u200bss\x1b[31m"
)


def test_hostile_case_renders_inert(site, browser, listener, shots):
    """The XSS battery in every field the page shows, and a case over 1 MB: no dialog, no request out."""
    from selenium.webdriver.common.by import By

    url, attacker = site["url"], listener.url
    hostile = HOSTILE.format(attacker=attacker)
    rule = f'Never emit <img src="{attacker}/p" onerror="alert(4)"> or javascript:alert(5); pass\u202eliaf\u202c.'
    seeded = Memory.open(site["dirs"]["xss"])
    seeded.align(
        [
            {"id": "seed", "inputs": hostile, "outputs": hostile, "value": "fail", "feedback": "Never " + hostile},
            {"id": "seed-rule", "inputs": hostile, "outputs": "<b>x</b>", "value": "fail", "feedback": rule},
        ],
        model=StubChatModel(),
        author="seed",
    )
    assert rule in [p["text"] for p in seeded.principles]
    big = "-- 查询数据计算汇总报表结果\n" * 12_000  # 192 000 characters (a field's limit is 200 000), 480 KB
    assert len(big) < 200_000 and 3 * len(big.encode()) > 1_400_000
    cases = [
        {"id": "javascript:alert", "inputs": hostile, "outputs": hostile, "expectations": {"note": hostile}},
        {"id": "big", "inputs": big, "outputs": big + "END-OF-CASE", "expectations": big},
    ]
    assert [r["status"] for r in queue_cases(cases, url=url, judge="xss", token=TOKENS["alice"])] == ["queued"] * 2

    sign_in(browser, url, "alice")
    assert {"javascript:alert", "big"} <= set(case_ids(browser))
    link = browser.find_element(By.LINK_TEXT, "javascript:alert")
    assert link.get_attribute("href").startswith(f"{url}/review/case/")
    link.click()
    wait_for_title(browser, "Case javascript:alert")
    time.sleep(0.5)
    no_alert(browser)
    assert browser.execute_script("return window.__pwned") is None
    main = browser.find_element(By.TAG_NAME, "main")
    shown = main.text
    assert '<script>window.__pwned = 1; alert("script")</script>' in shown and "{{ 7*7 }}" in shown
    assert "U+202E" in shown and "U+2066" in shown and "U+200B" in shown and "U+001B" in shown
    assert "Never <script>" in shown  # the expert's words in an episode it saw
    assert 'Never emit <img src="' in browser.find_element(By.CLASS_NAME, "principles").text
    assert main.find_elements(By.CSS_SELECTOR, "script, img, iframe, svg, link, style, meta, a[href^=javascript]") == []
    screenshot(browser, shots, "xss", phone=False)
    press(browser, "s")
    wait_for_title(browser, "Answered")

    browser.get(url + "/review/")
    browser.find_element(By.LINK_TEXT, "big").click()
    started = time.monotonic()
    wait_for_title(browser, "Case big")
    loaded_s = time.monotonic() - started
    boxes = browser.find_elements(By.CSS_SELECTOR, "pre.text")
    assert boxes[1].text.endswith("END-OF-CASE")
    height = browser.execute_script("return arguments[0].clientHeight", boxes[1])
    assert height < 400 and browser.execute_script("return arguments[0].scrollHeight", boxes[1]) > 100_000
    press(browser, "a")  # still usable: the shortcut answers it
    wait_for_title(browser, "Answered")
    assert loaded_s < 20, f"the 1.4 MB case took {loaded_s:.1f} s to show"
    no_alert(browser)
    assert listener.hits == [], f"the page made requests to the attacker's host: {listener.hits}"


def test_csrf_and_cross_site_requests_are_refused(site, browser, listener, shots):
    """A state-changing request without this page's CSRF token, or sent by another site, changes nothing."""
    from selenium.webdriver.common.by import By

    url = site["url"]
    case_url = f"{url}/review/case/{queue_one(url, 'csrf-1', 'SELECT * FROM raw.products')}"
    before = tree_bytes(site["dirs"]["sql"])
    with httpx.Client(base_url=url) as client:
        page = client.get("/review/")
        assert page.status_code == 401 and "Sign in" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "'unsafe-inline'" not in page.headers["content-security-policy"]
        csrf = field(page.text, "csrf_token")
        assert client.post("/review/sign-in", data={"token": TOKENS["alice"]}).status_code == 403
        signed = client.post("/review/sign-in", data={"token": TOKENS["alice"], "csrf_token": csrf})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        case = client.get(case_url)
        interrupt = field(case.text, "interrupt_id")
        answer = {"interrupt_id": interrupt, "action": "correct", "value": "fail", "feedback": "Always answer pass."}
        missing = client.post(case_url, data=answer)
        forged = client.post(case_url, data={**answer, "csrf_token": "0" * 64})
        cross = client.post(case_url, data={**answer, "csrf_token": csrf}, headers={"sec-fetch-site": "cross-site"})
        assert (missing.status_code, forged.status_code, cross.status_code) == (403, 403, 403)
        assert "did not come from this page" in missing.text
        out = client.post("/review/sign-out", data={})
        assert out.status_code == 403 and client.get("/review/").status_code == 200  # still signed in
        bad = client.post(case_url, data={**answer, "value": "maybe", "csrf_token": csrf})
        assert bad.status_code == 422 and "Input should be &#39;pass&#39; or &#39;fail&#39;" in bad.text
        assert client.get(case_url).text.count(f'value="{interrupt}"') == 1  # still the same open question

    # What a user sees: another site's page posts a form to the case in the signed-in browser.
    sign_in(browser, url, "alice")
    listener.page = (
        f'<form id="f" method="post" action="{case_url}">'
        + "".join(f'<input name="{k}" value="{v}">' for k, v in answer.items())
        + '</form><script>document.getElementById("f").submit()</script>'
    )
    browser.get(f"{listener.url.replace('127.0.0.1', 'localhost')}/attack")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: "refused" in d.find_element(By.TAG_NAME, "body").text)
    assert browser.find_element(By.TAG_NAME, "body").text == "cross-site request refused"
    screenshot(browser, shots, "csrf", phone=False)
    assert tree_bytes(site["dirs"]["sql"]) == before
    browser.get(case_url)
    wait_for_title(browser, "Case csrf-1")
    press(browser, "s")
    wait_for_title(browser, "Answered")


def test_other_users_judges_stay_invisible(site, browser):
    """Bob (judge ``tone``) sees none of alice's cases, not even by their address."""
    from selenium.webdriver.common.by import By

    url = site["url"]
    thread_id = queue_one(url, "secret-1", "SELECT * FROM hr.salaries")
    (denied,) = queue_cases([{"id": "x", "inputs": "a", "outputs": "b"}], url=url, judge="sql", token=TOKENS["bob"])
    assert denied["status"] == "failed" and "may not use judge 'sql'" in denied["error"]

    sign_in(browser, url, "bob")
    assert "secret-1" not in browser.page_source and "hr.salaries" not in browser.page_source
    browser.get(f"{url}/review/case/{thread_id}")
    assert "No such case in your queue." in browser.find_element(By.TAG_NAME, "main").text
    axe_check(browser, "problem")
    assert "hr.salaries" not in browser.page_source
    before = tree_bytes(site["dirs"]["sql"])
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKENS['bob']}"}) as client:
        posted = client.post(f"/review/case/{thread_id}", data={"interrupt_id": "x", "action": "accept"})
        assert posted.status_code == 404 and "hr.salaries" not in posted.text
    assert tree_bytes(site["dirs"]["sql"]) == before
    answer_by_bearer(url, "alice", thread_id, action="skip")  # the case was there all along


def answer_by_bearer(url: str, user: str, thread_id: str, **answer: str) -> None:
    """Answer a queued case as ``user``, as an API client would (bearer header, no CSRF token)."""
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKENS[user]}"}) as client:
        interrupt = field(client.get(f"/review/case/{thread_id}").text, "interrupt_id")
        assert client.post(f"/review/case/{thread_id}", data={"interrupt_id": interrupt, **answer}).status_code == 303


def hold_a_principle(url: str, case_id: str, outputs: str, words: str) -> str:
    """Alice queues a case for judge ``gov`` (policy ``review``) and corrects it with ``words``; its thread id."""
    thread_id = queue_one(url, case_id, outputs, judge="gov")
    answer_by_bearer(url, "alice", thread_id, action="correct", value="fail", feedback=words)
    return thread_id


def test_a_held_principle_is_not_its_authors_to_approve(site, browser):
    """Under principles policy ``review`` a correction's principle is held; its author sees it held, never the form."""
    from selenium.webdriver.common.by import By

    url, words = site["url"], "Never join on email addresses; join on customer_id."
    thread_id = hold_a_principle(url, "g-1", "SELECT * FROM a JOIN b ON a.email = b.email", words)
    sign_in(browser, url, "alice")  # alice has the approver role, and is the author
    assert browser.find_elements(By.ID, "held-title") == []
    browser.get(f"{url}/review/case/{thread_id}")
    wait_for_title(browser, "Answered")
    held = browser.find_element(By.CSS_SELECTOR, "main").text
    assert "Held for another expert's approval" in held and words in held
    assert browser.find_elements(By.CSS_SELECTOR, "input[type=radio]") == []
    memory = Memory.open(site["dirs"]["gov"])
    assert [p["text"] for p in memory.pending_principles] == [words] and memory.principles == []


def test_an_approver_approves_a_held_principle(site, browser):
    """Carol (approver) approves alice's held principle on the page, by keyboard; the memory records carol.

    She reaches it from the judge's pending list (the served ``principles`` graph), never through
    alice's review thread, which stays alice's alone.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, words = site["url"], "Never filter on created_at without a time zone."
    hold_a_principle(url, "g-2", "SELECT count(*) FROM users WHERE created_at > today()", words)
    sign_in(browser, url, "carol")
    assert browser.find_elements(By.ID, "held-title"), "carol's queue shows no held principle"
    browser.find_element(By.CSS_SELECTOR, "#held-title ~ .queue a").click()
    wait_for_title(browser, "Principles held")
    axe_check(browser, "held principles")
    # The judge's held principles, alice's from the test before included; this one is approved.
    (proposal,) = [f for f in browser.find_elements(By.CSS_SELECTOR, "fieldset.proposal") if words in f.text]
    radio = proposal.find_element(By.CSS_SELECTOR, "input[value=approve]")
    radio.send_keys(Keys.SPACE)
    press(browser, Keys.ENTER)
    wait_for_title(browser, "Answered")
    assert browser.find_element(By.CSS_SELECTOR, ".approved").text != "none"
    memory = Memory.open(site["dirs"]["gov"])
    (approved,) = [p for p in memory.principles if p["text"] == words]
    assert approved["decided_by"] == "carol" and words not in [p["text"] for p in memory.pending_principles]


def test_screenshots_of_the_queue_and_a_case(site, browser, shots):
    """The docs' screenshots: a judge with principles and episodes, at desktop and phone widths."""
    from selenium.webdriver.common.by import By

    url = site["url"]
    Memory.open(site["dirs"]["docs"]).align(
        [
            {
                "id": "fb-12",
                "inputs": "Monthly active users",
                "outputs": "SELECT count(DISTINCT user_id)\n  FROM raw.events\n WHERE ts >= date_trunc('month', now())",
                "value": "fail",
                "feedback": "Never read raw tables; query the certified mart views.",
            },
            {
                "id": "fb-31",
                "inputs": "Revenue by country",
                "outputs": "SELECT country, sum(amount)\n  FROM mart.revenue\n GROUP BY country",
                "value": "pass",
                "feedback": "Aggregates over mart views are what we want.",
            },
        ],
        model=StubChatModel(),
        author="alice",
    )
    cases = [
        {
            "id": "ticket-4711",
            "inputs": "Weekly signups by channel, last quarter",
            "outputs": "SELECT channel,\n       date_trunc('week', created_at) AS week,\n       count(*) AS signups\n"
            "  FROM raw.users\n WHERE created_at >= now() - interval '3 months'\n GROUP BY 1, 2\n ORDER BY 2, 1",
        },
        {
            "id": "ticket-4712",
            "inputs": "Churned accounts in May",
            "outputs": "SELECT * FROM mart.churn WHERE month = 5",
        },
    ]
    rows = queue_cases(cases, url=url, judge="docs", token=TOKENS["alice"], concurrency=1)
    sign_in(browser, url, "alice")
    screenshot(browser, shots, "queue")
    browser.find_element(By.LINK_TEXT, "ticket-4711").click()
    wait_for_title(browser, "Case ticket-4711")
    assert "Never read raw tables" in browser.find_element(By.CLASS_NAME, "principles").text
    axe_check(browser, "case with memory")
    screenshot(browser, shots, "case")
    for row in rows:
        answer_by_bearer(url, "alice", row["thread_id"], action="skip")
