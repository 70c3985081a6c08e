"""The graphs experts answer: judging with interrupt-driven review, decisions on held principles, batch review.

Review: judging (:func:`~memalign_graph.judge_graph.judging_graph`) → ``collect_feedback``
(``interrupt``) → ``distill`` → ``approve_principles`` (``interrupt``, only when distillation held
principles for an expert; see :mod:`memalign_graph.governance`). Principles: an approver's
decisions on the memory's pending list. Batch review: one review branch per case (``Send``).
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send, interrupt

from memalign_graph import alignment, duties, lifecycle
from memalign_graph.context import (
    Context,
    ServedAlignContext,
    ServedContext,
)
from memalign_graph.episodic import ModelJudgment
from memalign_graph.errors import DutiesError
from memalign_graph.judge_graph import judging_graph
from memalign_graph.nodes import chat_model, node, read_case, run_memory, serve
from memalign_graph.review import (
    corrected_judgment,
    needs_review,
    principles_answer_model,
    principles_payload,
    record_from_review,
    review_answer_model,
    review_payload,
    review_record_id,
)
from memalign_graph.state import (
    BatchReviewInput,
    BatchReviewState,
    PrinciplesInput,
    PrinciplesOutput,
    PrinciplesState,
    ReviewOutput,
    ReviewState,
    ServedReviewOutput,
)
from memalign_graph.versions import VersionedMemory


def route_review(state: ReviewState, runtime: Runtime[Context]) -> str:
    """Send the judgment to ``collect_feedback`` if the review policy selects it, else finish."""
    ctx, memory = run_memory(runtime)
    selected = needs_review(
        state["judgment"],
        memory.spec,
        read_case(state, memory),
        ctx.review,
        min_margin=ctx.review_margin,
        sample_rate=ctx.review_sample_rate,
    )
    return "collect_feedback" if selected else END


def collect_feedback(state: ReviewState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Pause for the expert (``interrupt``) and return their validated answer.

    Nothing before the ``interrupt()`` has side effects, so LangGraph's re-run
    of this node on resume is safe. On a served judge the expert needs the reviewer
    role, and an answer with ``replace: true`` for another author's record needs the
    admin role (:func:`~memalign_graph.duties.replace_refusal`): such an answer is not
    taken; the question is asked again with the reason in its payload's ``refused``.

    Raises:
        DutiesError: for a served user without the reviewer role (before the question).
    """
    ctx, memory = run_memory(runtime)
    duties.check_feedback(ctx.author or "anonymous", ctx.roles)
    case = read_case(state, memory)
    seen = state.get("principles", []), state.get("episodes", [])
    payload = review_payload(memory.spec, case, state["judgment"], *seen)
    while True:  # each refused answer is followed by a new interrupt (resumes match interrupts by order)
        answer = interrupt(payload, response_schema=review_answer_model(memory.spec))
        review = answer.model_dump(exclude_none=True)
        if ctx.author:
            review["reviewer"] = ctx.author
        refused = _replace_refusal(ctx, memory, case, state["judgment"], review)
        if refused is None:
            return {"review": review}
        payload = {**payload, "refused": refused}


def _replace_refusal(
    ctx: Context, memory: VersionedMemory, case: dict[str, Any], judgment: Any, review: dict[str, Any]
) -> str | None:
    """Why this served answer may not replace the stored record it names, or ``None``."""
    if ctx.roles is None or not review.get("replace"):
        return None
    record = record_from_review(case, judgment, review, store_accepted=ctx.store_accepted)
    if record is None:
        return None
    reviewer = ctx.author or "anonymous"
    return duties.replace_refusal(reviewer, ctx.roles, record["id"], memory.records.get(record["id"]))


def distill_review(state: ReviewState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write the expert's correction into memory through the same path as batch alignment.

    The record keeps the case's id unless another author's record has it (then it gets
    its own ``review-…`` id; see :func:`~memalign_graph.review.review_record_id`).
    Re-running it is harmless: aligning an identical record again is a no-op.
    """
    ctx, memory = run_memory(runtime)
    review = state["review"] or {}
    record = record_from_review(read_case(state, memory), state["judgment"], review, store_accepted=ctx.store_accepted)
    reviewer = ctx.author or review.get("reviewer") or "expert"
    if record is not None:
        record = review_record_id(record, memory.records, reviewer, replace=bool(review.get("replace")))
    update: dict[str, Any] = {"report": None}
    if review.get("action") == "correct" and review.get("value") is not None:
        update["judgment"] = corrected_judgment(state["judgment"], review)
    if record is None:
        return update
    judgment = state["judgment"]
    judged = None
    if not judgment.get("precedent"):  # the model's own judgment, made before the expert answered
        own = ModelJudgment(
            value=judgment.get("model_value", judgment["value"]),
            scores=judgment.get("scores"),
            model=judgment["model"],
            via="review",
        )
        judged = {record["id"]: own}
    report = alignment.align(
        memory,
        [record],
        model=chat_model(ctx),
        judged=judged,
        score_feedback=ctx.score_feedback,
        batch_size=ctx.batch_size,
        token_budget=ctx.token_budget,
        max_retries=ctx.max_retries,
        backoff_s=ctx.retry_backoff_s,
        author=reviewer,
        reason=f"review of {record['id']}: {review['action']}",
        principles_policy=ctx.principles_policy,
        via="review",
    )
    return {**update, "report": report.to_dict()}


def route_principles(state: ReviewState) -> str:
    """Ask the expert about principles distillation held (``approve_principles``), or finish."""
    report = state.get("report") or {}
    return "approve_principles" if report.get("proposed_principles") else END


def approve_principles(state: ReviewState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Pause for the expert (``interrupt``) to approve or reject the principles this review's distillation proposed.

    The answer (``{"approve": [ids], "reject": [ids], "reviewer"?}``, validated by
    :func:`~memalign_graph.review.principles_answer_model`) is applied with
    :func:`~memalign_graph.lifecycle.decide_principles` as one new version;
    proposals left unanswered stay pending (``memalign principles STORE --pending``).
    Nothing before the ``interrupt()`` has side effects, and proposals already
    decided (by another expert, or before a re-run) are left out. On a served judge
    the decisions must be the user's to make (:func:`~memalign_graph.duties.check_decisions`:
    the approver role, and never approving a principle from one's own feedback); if one
    is not, none is applied, ``principles_review`` says why (``refused``) and the proposals
    stay pending for another approver (the served ``principles`` graph).
    """
    ctx, memory = run_memory(runtime)
    wanted = set((state.get("report") or {}).get("proposed_principles") or {})
    proposals = [p for p in memory.pending_principles if p["id"] in wanted]
    if not proposals:
        return {"principles_review": None}
    answer = interrupt(
        principles_payload(proposals), response_schema=principles_answer_model([p["id"] for p in proposals])
    )
    decision = answer.model_dump(exclude_none=True)
    still = {p["id"] for p in memory.pending_principles}
    approve = [i for i in decision.get("approve", []) if i in still]
    reject = [i for i in decision.get("reject", []) if i in still]
    if approve or reject:
        author = ctx.author or decision.get("reviewer") or (state.get("review") or {}).get("reviewer") or "expert"
        try:
            change = lifecycle.decide_principles(memory, approve, reject, author=author, roles=ctx.roles)
        except DutiesError as exc:  # separation of duties: the proposals stay pending for an approver
            return {"principles_review": {**decision, "refused": str(exc)}}
        decision["version"] = change.version
    return {"principles_review": decision}


def build_review_graph(*, served: bool = False) -> StateGraph:
    """The judge graph with interrupt-driven expert review, uncompiled.

    ``retrieve_principles → retrieve_episodes → judge → [collect_feedback → distill
    → [approve_principles]] → END``; the review policy (``Context.review``) decides
    whether a judgment goes to the expert, and ``approve_principles`` runs when
    distillation held principles for an expert (principles policy ``review``, or the
    gate in :mod:`memalign_graph.governance`). Compile with a checkpointer to pause
    and resume. Output: ``{"judgment", "review", "report", "principles_review"}``;
    when the expert corrected the value, ``judgment`` carries the expert's value
    (see :func:`corrected_judgment`). With ``served``: context :class:`ServedContext`,
    the reviewer and approver are the authenticated user, and the output also carries
    the working memory (:class:`ServedReviewOutput`).
    """
    builder = judging_graph(ReviewState, ReviewOutput, ServedReviewOutput, ServedContext, served)
    builder.add_node("collect_feedback", node(collect_feedback, served=served))
    builder.add_node("distill", node(distill_review, served=served))
    builder.add_conditional_edges("judge", serve(route_review) if served else route_review, ["collect_feedback", END])
    builder.add_node("approve_principles", node(approve_principles, served=served))
    builder.add_edge("collect_feedback", "distill")
    builder.add_conditional_edges("distill", route_principles, ["approve_principles", END])
    builder.add_edge("approve_principles", END)
    return builder


# The principles graph: decisions on principles held for approval, from the memory's pending list.


def decide_held(state: PrinciplesState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Apply the input's decisions (if any) as one new version, then list the proposals still pending.

    The decider is ``Context.author`` (served: the authenticated user). On a served judge each
    decision must be theirs to make, checked under the writer lock
    (:func:`~memalign_graph.duties.check_decisions`: the approver role, and never approving a
    principle distilled from one's own feedback). This is how an approver reaches a principle
    held from another expert's review: from the memory's pending list, never through that
    expert's review thread, which stays theirs alone.

    Raises:
        DutiesError: (a ``PermissionError``) for a decision that is not the user's to make; nothing is written.
        KeyError: naming ids that are not pending proposals; nothing is written.
        ValueError: for ids that are not lists of strings, or one both approved and rejected; nothing is written.
    """
    ctx, memory = run_memory(runtime)
    approve, reject = state.get("approve") or [], state.get("reject") or []
    if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in (approve, reject)):
        raise ValueError("approve and reject must be lists of proposal ids")
    decision = None
    if approve or reject:
        author = ctx.author or "expert"
        change = lifecycle.decide_principles(
            memory, approve, reject, author=author, reason=state.get("reason"), roles=ctx.roles
        )
        decision = {"approve": approve, "reject": reject, "version": change.version, "decided_by": author}
    pending = duties.pending_view(memory.pending_principles, memory.records, ctx.author or "expert", ctx.roles)
    return {"decision": decision, "pending": pending}


def build_principles_graph(*, served: bool = False) -> StateGraph:
    """The principles graph, uncompiled: ``START → decide → END``.

    Input: :class:`PrinciplesInput` (``{"approve": [ids], "reject": [ids], "reason"?}``, or ``{}``
    to list only); output: :class:`PrinciplesOutput` (``{"decision", "pending"}``). With
    ``served``: context :class:`ServedAlignContext` (the judge's name only), and the decider is the
    authenticated user, whose roles the decisions must allow (see :func:`decide_held`).
    """
    builder = StateGraph(
        PrinciplesState,
        context_schema=ServedAlignContext if served else Context,
        input_schema=PrinciplesInput,
        output_schema=PrinciplesOutput,
    )
    builder.add_node("decide", node(decide_held, served=served))
    builder.add_edge(START, "decide")
    builder.add_edge("decide", END)
    return builder


_review_subgraph = None


def _review_graph() -> Any:
    global _review_subgraph
    if _review_subgraph is None:
        _review_subgraph = build_review_graph().compile()
    return _review_subgraph


def fan_out(state: BatchReviewState) -> list[Send]:
    """One ``review_case`` branch per case."""
    return [Send("review_case", {"case": case}) for case in state["cases"]]


def review_case(state: dict[str, Any], runtime: Runtime[Context]) -> dict[str, Any]:
    """Judge and (if the policy says so) review one case; runs the review graph as a subgraph."""
    case = state["case"]
    out = _review_graph().invoke(case, context=runtime.context)
    return {"results": [{"id": case.get("id"), **out}]}


def build_batch_review_graph() -> StateGraph:
    """Judge and review many cases in one run, uncompiled.

    Each case gets its own branch (``Send``), so several reviews can be pending
    at once; resume them one at a time with ``Command(resume={interrupt_id: answer})``.
    Input ``{"cases": [...]}``; output ``{"results": [{"id", "judgment", "review", "report"}]}``.
    """
    builder = StateGraph(BatchReviewState, context_schema=Context, input_schema=BatchReviewInput)
    builder.add_node("review_case", review_case)
    builder.add_conditional_edges(START, fan_out, ["review_case"])
    builder.add_edge("review_case", END)
    return builder
