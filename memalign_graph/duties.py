"""Separation of duties on served judges: who may give feedback, approve principles, replace a record.

A distilled principle is a standing instruction to the judge written from someone's
feedback, so on a served judge the person whose feedback produced it must not be the one
who lets it in. Roles come from the server's token file (:mod:`memalign_graph.auth`):

* ``reviewer``: answers reviews and sends feedback (the align graph). Feedback from a
  principal without the ``approver`` role is distilled under policy ``review`` whatever the
  judge's stored policy: its principles wait for an approver.
* ``approver``: approves or rejects pending proposals, except that nobody approves a
  proposal distilled from a record they authored (the ledger records each record's author,
  :class:`~memalign_graph.backends.base.LedgerEntry`). Rejecting is allowed to an author:
  it keeps a rule out, which needs no second person.
* ``admin``: replaces a record another principal authored (a review answer's
  ``replace: true``); without it a review of such a case is stored under its own id.

The functions are pure: they decide, the served graphs and :class:`~memalign_graph.memory.Memory`
enforce. Each returns the reason for a refusal (naming the principal and the record or
proposal, never feedback text) or ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from memalign_graph.errors import DutiesError
from memalign_graph.governance import PrinciplesPolicy, effective_policy

REVIEWER, APPROVER, ADMIN = "reviewer", "approver", "admin"
ROLES: tuple[str, ...] = (REVIEWER, APPROVER, ADMIN)


def source_authors(proposal: Mapping[str, Any], ledger: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """``{source record id: its author}`` for a proposal's ``sources``; ``None`` where the ledger records none."""
    authors: dict[str, str | None] = {}
    for source in proposal.get("sources") or ():
        entry = ledger.get(source)
        authors[source] = entry.get("author") if isinstance(entry, Mapping) else None
    return authors


def feedback_refusal(principal: str, roles: Iterable[str]) -> str | None:
    """Why ``principal`` may not give feedback (answer a review, run the align graph), or ``None``."""
    if REVIEWER in set(roles):
        return None
    return f"{principal!r} may not give feedback: that needs the {REVIEWER} role"


def check_feedback(principal: str, roles: Iterable[str] | None) -> None:
    """Refuse feedback from ``principal`` unless their ``roles`` allow it (``None``: library use, always allowed).

    Raises:
        DutiesError: (a ``PermissionError``) naming the principal and the role they lack (:func:`feedback_refusal`).
    """
    if roles is not None and (reason := feedback_refusal(principal, roles)):
        raise DutiesError(reason)


def feedback_policy(stored: str | None, requested: str | None, roles: Iterable[str]) -> PrinciplesPolicy:
    """The principles policy for feedback a principal with ``roles`` gives on a served judge.

    ``review`` when the principal is not an approver (its principles then wait for one),
    else :func:`~memalign_graph.governance.effective_policy` of the judge's stored policy
    and the run's.

    Raises:
        ValueError: if ``stored`` or ``requested`` is set and not ``auto``/``review``.
    """
    policy = effective_policy(stored, requested)
    return policy if APPROVER in set(roles) else "review"


def decision_refusal(
    principal: str,
    roles: Iterable[str],
    proposal: Mapping[str, Any],
    ledger: Mapping[str, Mapping[str, Any]],
    *,
    approve: bool,
) -> str | None:
    """Why ``principal`` may not approve (``approve=True``) or reject ``proposal``, or ``None``.

    Both need the ``approver`` role. Approving also needs every source record to have a
    recorded author other than ``principal``: a source aligned before authors were recorded
    (or gone from the ledger) cannot show that someone else wrote it, so it is refused too.

    Args:
        principal: who decides (the authenticated identity).
        roles: their roles.
        proposal: a pending proposal (``id``, ``sources``).
        ledger: the memory's ledger (record id -> entry with ``author``).
        approve: approving (``True``) or rejecting.
    """
    if APPROVER not in set(roles):
        return f"{principal!r} may not decide proposal {proposal['id']}: that needs the {APPROVER} role"
    if not approve:
        return None
    authors = source_authors(proposal, ledger)
    own = sorted(source for source, author in authors.items() if author == principal)
    if own:
        return (
            f"{principal!r} may not approve proposal {proposal['id']}: it comes from their own record {', '.join(own)}"
        )
    unknown = sorted(source for source, author in authors.items() if not author)
    if unknown or not authors:
        said = ", ".join(unknown) if unknown else "none"
        return f"{principal!r} may not approve proposal {proposal['id']}: no recorded author for source {said}"
    return None


def check_decisions(
    principal: str,
    roles: Iterable[str],
    proposals: Iterable[Mapping[str, Any]],
    ledger: Mapping[str, Mapping[str, Any]],
    approve: Iterable[str],
    reject: Iterable[str],
) -> None:
    """Refuse a set of decisions if any one is not ``principal``'s to make (nothing is decided then).

    Ids that are not among ``proposals`` are left to :func:`memalign_graph.governance.decide`,
    which names them.

    Raises:
        DutiesError: (a ``PermissionError``) naming every refused proposal and why.
    """
    by_id = {p["id"]: p for p in proposals}
    roles = tuple(roles)
    refusals = [
        reason
        for ids, approving in ((approve, True), (reject, False))
        for pid in ids
        if pid in by_id
        and (reason := decision_refusal(principal, roles, by_id[pid], ledger, approve=approving)) is not None
    ]
    if refusals:
        raise DutiesError("; ".join(refusals))


def pending_view(
    proposals: Iterable[Mapping[str, Any]],
    ledger: Mapping[str, Mapping[str, Any]],
    principal: str,
    roles: Iterable[str] | None,
) -> list[dict[str, Any]]:
    """Pending ``proposals`` as ``principal`` sees them: what each says, and whether they may approve it.

    Returns:
        ``[{"id", "text", "sources", "held", "may_approve", "refusal"}]`` in the proposals' order;
        ``refusal`` is :func:`decision_refusal`'s reason (``None`` when ``roles`` is ``None``:
        library use, nothing enforced).
    """
    roles = None if roles is None else tuple(roles)
    out = []
    for proposal in proposals:
        refusal = None if roles is None else decision_refusal(principal, roles, proposal, ledger, approve=True)
        out.append(
            {
                "id": proposal["id"],
                "text": proposal["text"],
                "sources": list(proposal.get("sources") or ()),
                "held": str(proposal.get("held") or ""),
                "may_approve": refusal is None,
                "refusal": refusal,
            }
        )
    return out


def replace_refusal(
    principal: str, roles: Iterable[str], record_id: str, entry: Mapping[str, Any] | None
) -> str | None:
    """Why ``principal`` may not replace the record ``record_id`` (a review's ``replace: true``), or ``None``.

    Nothing stored under the id, or a record ``principal`` authored: allowed. Another
    principal's record (or one with no recorded author) needs the ``admin`` role.

    Args:
        principal: who answers the review.
        roles: their roles.
        record_id: the id the answer would overwrite.
        entry: the ledger's entry for it, or ``None``.
    """
    if entry is None or ADMIN in set(roles):
        return None
    author = entry.get("author")
    if author == principal:
        return None
    whose = f"{author!r}'s record" if author else "a record with no recorded author"
    return f"{principal!r} may not replace {whose} {record_id}: that needs the {ADMIN} role"


__all__ = [
    "ADMIN",
    "APPROVER",
    "REVIEWER",
    "ROLES",
    "check_decisions",
    "check_feedback",
    "decision_refusal",
    "feedback_policy",
    "feedback_refusal",
    "pending_view",
    "replace_refusal",
    "source_authors",
]
