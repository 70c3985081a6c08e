"""After forget, no version names who gave the forgotten feedback (issue 21, "also seen").

Before: ``forget`` erased a record's content from every version, but the version that aligned
it kept its author (the reviewer's name) and reason, linking a person to feedback that was
deleted for privacy. Now a version whose every added or changed record is forgotten loses
its author and reason too; versions that also aligned other records keep theirs (their
author gave those too), with the forgotten ids scrubbed from the reason.
"""

from __future__ import annotations

from memalign_graph import Memory
from memalign_graph.backends.base import FORGOTTEN, FORGOTTEN_AUTHOR, FORGOTTEN_REASON
from memalign_graph.testing import StubChatModel
from tests.conftest import feedback


def test_forget_redacts_the_author_of_a_version_that_only_aligned_forgotten_records(memory: Memory, all_bytes):
    stub = StubChatModel()
    memory.align([feedback("r-keep", "SELECT 1", text="Use views.")], model=stub, author="bob")
    memory.align(
        [feedback("r-gone", "SELECT 2", text="Never join on email.")],
        model=stub,
        author="alice-7731",
        reason="alice-7731's review of r-gone",
    )
    memory.align(
        [feedback("r-gone-2", "SELECT 3", text="Filter tenants."), feedback("r-mixed", "SELECT 4", text="Cite.")],
        model=stub,
        author="carol",
        reason="carol's batch with r-gone-2",
    )
    assert b"alice-7731" in all_bytes(memory)
    memory.forget(["r-gone", "r-gone-2"], author="ops")
    history = [(v["version"], v["author"], v["reason"]) for v in memory.backend.versions()]
    assert history == [
        (0, history[0][1], history[0][2]),
        (1, "bob", history[1][2]),
        (2, FORGOTTEN_AUTHOR, FORGOTTEN_REASON),
        (3, "carol", f"carol's batch with {FORGOTTEN}"),  # it aligned r-mixed too: its author stays
        (4, "ops", "forgot 2 record(s)"),
    ]
    assert b"alice-7731" not in all_bytes(memory)
    assert set(memory.records) == {"r-keep", "r-mixed"} and memory.records["r-mixed"]["author"] == "carol"
