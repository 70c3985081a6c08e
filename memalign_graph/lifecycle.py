"""A memory's lifecycle after alignment: forget, rollback, principle edits, governance, and diffs.

Each change is one new version, committed as every version is (:mod:`memalign_graph.versions`):
under the writer locks, prepared aside, written at once. What each one deletes and keeps:

- :func:`forget` deletes records for good: their episodes, their ledger entries, what was derived
  from them alone, and every trace of them in older versions (a privacy deletion).
- :func:`rollback` restores principles, episodes and proposals as they were at a version, as a
  new version; forgotten records stay forgotten and the principles policy is not rolled back.
- :func:`add_principle`, :func:`edit_principle`, :func:`delete_principle` change hand-written
  or distilled principles; episodes are never touched.
- :func:`set_principles_policy` and :func:`decide_principles` govern distilled principles
  (see :mod:`memalign_graph.governance`).

Re-aligning a record with new content (overwriting it) is alignment's work: see
:func:`memalign_graph.alignment.plan_episodes`. :func:`diff_versions` reads what changed
between two versions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from memalign_graph.backends.base import MemoryBackend
from memalign_graph.duties import check_decisions
from memalign_graph.errors import MemoryFormatError
from memalign_graph.governance import check_policy, decide
from memalign_graph.semantic import Principle, drop_sources, merge_principles, new_principle, now_iso
from memalign_graph.versions import VersionedMemory


@dataclass
class ChangeReport:
    """What a forget, rollback or principle edit did.

    Attributes:
        version: memory version after it.
        episodes_removed: ids of episodes deleted.
        episodes_restored: ids of episodes put back (rollback).
        principles_removed: ids of principles deleted.
        principles_added: ids of principles added.
    """

    version: int
    episodes_removed: list[str] = field(default_factory=list)
    episodes_restored: list[str] = field(default_factory=list)
    principles_removed: list[str] = field(default_factory=list)
    principles_added: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def forget(
    memory: VersionedMemory, record_ids: list[str], *, author: str = "expert", reason: str | None = None
) -> ChangeReport:
    """Delete records for good: their episodes, their ledger entries, and what was derived from them alone.

    Deletes: the records' episodes and ledger entries; principles whose every source is
    forgotten; the forgotten ids from the sources of the principles and proposals that keep
    other sources. Keeps: hand-written principles (no sources), and the rest of every
    principle. A principle superseded by a forgotten record's rule comes back (listed in
    ``principles_added``). This is a privacy deletion: after the new version is committed,
    the records are also erased from every older version, the episode history, older index
    snapshots and cached review threads (``MemoryBackend.purge``), so a rollback cannot
    bring them back.

    Raises:
        KeyError: naming the ids that are in no version of this memory; nothing is changed.
    """
    wanted = set(record_ids)
    with memory.writing():
        known = set(memory.checkpoint["records"])
        for entry in memory.backend.versions():
            known.update(entry["records"])
        unknown = sorted(wanted - known)
        if unknown:
            raise KeyError(f"{memory.backend.location}: no record with id {', '.join(unknown)} in any version")
        before = {p["id"] for p in memory.principles}
        principles, removed = drop_sources(memory.principles, wanted)
        proposed, _ = drop_sources(memory.proposed_principles, wanted)
        records = {k: v for k, v in memory.records.items() if k not in wanted}
        draft = memory.episodes.draft()
        gone = draft.delete(sorted(wanted))
        version = memory.commit(
            principles,
            records,
            author=author,
            reason=reason or f"forgot {len(wanted)} record(s)",
            episodes_changed=bool(gone),
            proposed=proposed,
            episodes=draft,
        )
        memory.backend.purge(wanted)
    restored = [p["id"] for p in principles if p["id"] not in before]
    return ChangeReport(version=version, episodes_removed=gone, principles_removed=removed, principles_added=restored)


def rollback(
    memory: VersionedMemory, version: int, *, author: str = "expert", reason: str | None = None
) -> ChangeReport:
    """Restore principles and episodes as they were at ``version``, as a new version.

    Deletes: episodes and ledger entries of records aligned (or re-aligned with other content)
    since ``version``; principles added since. Restores: the episodes of ``version`` from the
    episode history, its principles and its proposals (pending and rejected). Keeps: records
    forgotten since stay forgotten (they were erased from history); the principles policy (a
    rollback never relaxes ``review``); every version in between (history is never rewritten).

    Raises:
        KeyError: if ``version`` does not exist.
        MemoryFormatError: if an episode of that version is missing from the history.
    """
    with memory.writing():
        target = memory.backend.checkpoint(version)
        current = memory.records
        want = {rid: entry["hash"] for rid, entry in target["records"].items()}
        remove = [rid for rid in current if want.get(rid) != current[rid]["hash"]]
        restore = [rid for rid, digest in want.items() if current.get(rid, {}).get("hash") != digest]
        history = memory.backend.episode_history({(rid, want[rid]) for rid in restore})
        missing = [rid for rid in restore if (rid, want[rid]) not in history]
        if missing:
            raise MemoryFormatError(f"{memory.backend.location}: episodes {missing} of version {version} are lost")
        draft = memory.episodes.draft()
        draft.delete(remove)
        draft.upsert([history[(rid, want[rid])] for rid in restore])  # type: ignore[misc]
        before = {p["id"] for p in memory.principles}
        after = {p["id"] for p in target["principles"]}
        new_version = memory.commit(
            list(target["principles"]),
            dict(target["records"]),
            author=author,
            reason=reason or f"rollback to version {version}",
            episodes_changed=bool(remove or restore),
            proposed=list(target.get("proposed") or []),
            episodes=draft,
        )
    return ChangeReport(
        version=new_version,
        episodes_removed=sorted(set(remove) - set(restore)),
        episodes_restored=sorted(restore),
        principles_removed=sorted(before - after),
        principles_added=sorted(after - before),
    )


def add_principle(
    memory: VersionedMemory, text: str, *, author: str = "expert", reason: str | None = None
) -> Principle:
    """Add a hand-written principle: it has no sources, so neither forgetting nor re-alignment removes it.

    Deletes nothing; episodes are not touched.

    Raises:
        ValueError: if ``text`` is blank or repeats an existing principle.
    """
    with memory.writing():
        principle = new_principle(text, [], author)
        merged, added, _ = merge_principles(memory.principles, [principle])
        if not added:
            raise ValueError(f"principle {text!r} repeats an existing one")
        memory.commit(
            merged, memory.records, author=author, reason=reason or "added a principle", episodes_changed=False
        )
    return principle


def edit_principle(
    memory: VersionedMemory, principle_id: str, text: str, *, author: str = "expert", reason: str | None = None
) -> None:
    """Replace a principle's text: it keeps its id and sources, and the old text goes into its ``history``.

    Deletes nothing; episodes are not touched.

    Raises:
        KeyError: if there is no principle ``principle_id``.
        ValueError: if ``text`` is blank.
    """
    text = " ".join(text.split())
    if not text:
        raise ValueError("a principle's text must not be empty")
    with memory.writing():
        principles = memory.principles
        for i, p in enumerate(principles):
            if p["id"] == principle_id:
                old = {
                    "id": p["id"],
                    "text": p["text"],
                    "sources": list(p["sources"]),
                    "created_at": p["created_at"],
                    "author": p["author"],
                }
                principles[i] = Principle(
                    **{
                        **p,
                        "text": text,
                        "updated_at": now_iso(),  # type: ignore[typeddict-item]
                        "history": [*p.get("history", []), old],
                    }
                )
                break
        else:
            raise KeyError(f"no principle {principle_id!r}")
        memory.commit(
            principles, memory.records, author=author, reason=reason or f"edited {principle_id}", episodes_changed=False
        )


def delete_principle(
    memory: VersionedMemory, principle_id: str, *, author: str = "expert", reason: str | None = None
) -> None:
    """Delete a principle from working memory; the episodes of its sources stay, and so do older versions.

    Raises:
        KeyError: if there is no principle ``principle_id``.
    """
    with memory.writing():
        principles = [p for p in memory.principles if p["id"] != principle_id]
        if len(principles) == len(memory.checkpoint["principles"]):
            raise KeyError(f"no principle {principle_id!r}")
        memory.commit(
            principles,
            memory.records,
            author=author,
            reason=reason or f"deleted {principle_id}",
            episodes_changed=False,
        )


def set_principles_policy(
    memory: VersionedMemory, policy: str, *, author: str = "expert", reason: str | None = None
) -> int:
    """Store the judge's principles policy (``auto`` or ``review``) as a new version; nothing else changes.

    Returns:
        The version after it (unchanged if the policy already was ``policy``).

    Raises:
        ValueError: for a policy other than ``auto``/``review``; nothing is written.
    """
    check_policy(policy)
    with memory.writing():
        if memory.principles_policy == policy:
            return memory.version
        return memory.commit(
            memory.principles,
            memory.records,
            author=author,
            reason=reason or f"principles policy set to {policy}",
            episodes_changed=False,
            policy=policy,
        )


def decide_principles(
    memory: VersionedMemory,
    approve: list[str] | tuple[str, ...] = (),
    reject: list[str] | tuple[str, ...] = (),
    *,
    author: str = "expert",
    reason: str | None = None,
    roles: Iterable[str] | None = None,
) -> ChangeReport:
    """Approve or reject pending proposals, as one new version (see :func:`memalign_graph.governance.decide`).

    Approved proposals enter working memory (merged into an active principle that says
    the same; replacing the one they contradict unless it is hand-written); rejected ones
    stay in ``proposed_principles`` with status ``rejected``, so the same rule
    distilled again is not proposed again. Deletes nothing else; episodes are not touched.
    The version records who decided (``author``) and what (``"approved p-1"``); whose feedback
    a proposal came from is its ``sources``' authors in the ledger (so forgetting a record
    also unlinks its author from the decision).

    Args:
        memory: the judge's memory.
        approve: ids of pending proposals to approve.
        reject: ids of pending proposals to reject.
        author: who decides.
        reason: one line recorded with the version (default: the decisions).
        roles: ``author``'s roles on a served judge; when given, separation of duties is enforced
            under the writer lock (:func:`memalign_graph.duties.check_decisions`: the approver role,
            and no approving a proposal from ``author``'s own record). ``None``: not enforced (the
            operator's own process: the CLI, the Python API).

    Returns:
        A :class:`ChangeReport`: ``principles_added`` (approved and new in working memory),
        ``principles_removed`` (superseded by an approved one).

    Raises:
        DutiesError: (a ``PermissionError``) with ``roles``, naming each decision that is not ``author``'s to
            make; nothing is written.
        KeyError: naming ids that are not pending proposals; nothing is written.
        ValueError: if no id is given or one is both approved and rejected; nothing is written.
    """
    with memory.writing():
        ledger = memory.records
        if roles is not None:
            check_decisions(author, roles, memory.pending_principles, ledger, approve, reject)
        before = {p["id"] for p in memory.principles}
        active, proposed, _ = decide(
            memory.principles, memory.proposed_principles, list(approve), list(reject), author=author
        )
        parts = [
            f"approved {', '.join(approve)}" if approve else "",
            f"rejected {', '.join(reject)}" if reject else "",
        ]
        version = memory.commit(
            active,
            memory.records,
            author=author,
            reason=reason or "; ".join(p for p in parts if p),
            episodes_changed=False,
            proposed=proposed,
        )
    after = {p["id"] for p in active}
    return ChangeReport(
        version=version, principles_added=sorted(after - before), principles_removed=sorted(before - after)
    )


def diff_versions(backend: MemoryBackend, old: int, new: int) -> dict[str, Any]:
    """What changed between two versions.

    Returns:
        ``{"principles": {"added", "removed", "changed"}, "episodes": {"added", "removed", "changed"}}``;
        principles as ``{"id", "text"}`` (``changed``: ``{"id", "old", "new"}``), episodes as ids.

    Raises:
        KeyError: if a version does not exist.
    """
    a, b = backend.checkpoint(old), backend.checkpoint(new)
    pa = {p["id"]: p for p in a["principles"]}
    pb = {p["id"]: p for p in b["principles"]}
    ra, rb = a["records"], b["records"]
    return {
        "principles": {
            "added": [{"id": i, "text": pb[i]["text"]} for i in pb if i not in pa],
            "removed": [{"id": i, "text": pa[i]["text"]} for i in pa if i not in pb],
            "changed": [
                {"id": i, "old": pa[i]["text"], "new": pb[i]["text"]}
                for i in pb
                if i in pa and (pa[i]["text"], pa[i]["sources"]) != (pb[i]["text"], pb[i]["sources"])
            ],
        },
        "episodes": {
            "added": sorted(set(rb) - set(ra)),
            "removed": sorted(set(ra) - set(rb)),
            "changed": sorted(i for i in set(ra) & set(rb) if ra[i]["hash"] != rb[i]["hash"]),
        },
    }


__all__ = [
    "ChangeReport",
    "add_principle",
    "decide_principles",
    "delete_principle",
    "diff_versions",
    "edit_principle",
    "forget",
    "rollback",
    "set_principles_policy",
]
