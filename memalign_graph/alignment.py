"""MemAlign's alignment: expert feedback becomes episodes and, through distillation, principles.

The pipeline, in the order this module reads:

1. **validate** every record against the judge (:func:`validate_feedback`); one invalid record
   and nothing is written;
2. **episodes**: the records against the ledger (:func:`plan_episodes`). A new record becomes an
   episode; a record aligned before with other content replaces its episode, and the principles
   that came from it alone are removed (to be derived again from the new content); a record
   aligned with the same content is a no-op, unless its distillation failed (then it is retried).
   The new episodes are embedded (:func:`embed_episodes`);
3. **distill** the salient records into candidate principles with the LLM (:func:`distill`,
   see :mod:`memalign_graph.distill`);
4. **consolidate**: the LLM says whether each candidate repeats, contradicts or differs from
   its most similar principle, and whether each new one is a rule about the case or an
   instruction about the verdict (:func:`consolidate`, see :mod:`memalign_graph.classify`);
5. **govern**: which candidates enter working memory, which are held for an expert, and the
   merge (:func:`govern`, see :mod:`memalign_graph.governance`);
6. **commit** it all as one new version (:func:`commit`, see :mod:`memalign_graph.versions`).

Each step's result is plain JSON-like data, the TypedDicts of :mod:`memalign_graph.state`
(``EpisodePlan``, ``Distillation``, ``Consolidation``, ``Governance``), so the alignment graph
keeps it in its state.
:func:`aalign` (``Memory.aalign``) runs the steps holding the writer locks throughout, and embeds
episodes while the LLM distills. The alignment graph (:func:`memalign_graph.align_graph.build_align_graph`)
runs them as nodes; its commit node takes the locks and starts again if the memory moved.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from memalign_graph.alignment_report import (
    AlignmentReport,
    Phases,
    alignment_report,
    default_reason,
    seconds_since,
)
from memalign_graph.backends.base import LedgerEntry
from memalign_graph.classify import aclassify_directives, aclassify_pairs, text_key
from memalign_graph.distill import CallCounter, adistill, is_salient
from memalign_graph.episodic import Episode, ModelJudgment, episode_from_record
from memalign_graph.errors import JudgeError, JudgmentParseError, RecordError
from memalign_graph.governance import check_policy, effective_policy, govern_candidates, propose
from memalign_graph.models import resolve_chat_model, run_sync
from memalign_graph.prompts import PROMPT_VERSION
from memalign_graph.semantic import PrincipleVectors, drop_sources, merge_principles, related_pairs
from memalign_graph.spec import FeedbackRecord, JudgeSpec, embedding_text, parse_record, record_hash
from memalign_graph.state import AlignmentSteps, Consolidation, Distillation, EpisodePlan, Governance
from memalign_graph.versions import VersionedMemory

CONSOLIDATE_THRESHOLD = 0.85
"""Cosine similarity from which a candidate and its most similar principle go to the LLM (see :func:`consolidate`)."""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(phase, done, total)``, see :func:`aalign`."""


# 1. validate


def validate_feedback(spec: JudgeSpec, records: list[dict[str, Any]]) -> list[FeedbackRecord]:
    """Validate a batch of feedback records against the judge ``spec`` (all before any write).

    Raises:
        RecordError: naming the record (``"record N"`` or its id) and the problem,
            including duplicate ids within the batch.
    """
    out: list[FeedbackRecord] = []
    seen: set[str] = set()
    for n, raw in enumerate(records):
        record = parse_record(raw, spec, where=f"record {n}", feedback=True, require_id=True)
        if record["id"] in seen:
            raise RecordError(f"record {n}", f"duplicate id {record['id']!r} in this batch")
        seen.add(record["id"])
        out.append(record)
    return out


# 2. episodes


def plan_episodes(memory: VersionedMemory, records: list[FeedbackRecord]) -> EpisodePlan:
    """Compare validated ``records`` with the ledger of ``memory``'s loaded version (see the module docstring)."""
    plan = EpisodePlan(
        version=memory.version,
        started_at=time.time(),
        added=[],
        replaced=[],
        unchanged=[],
        fresh=[],
        retry=[],
        principles=[],
        removed_principles=[],
    )
    ledger = memory.checkpoint["records"]
    for record in records:
        entry = ledger.get(record["id"])
        if entry is None:
            plan["added"].append(record["id"])
            plan["fresh"].append(record)
        elif entry["hash"] != record_hash(record):
            plan["replaced"].append(record["id"])
            plan["fresh"].append(record)
        elif not entry["distilled"]:
            plan["retry"].append(record)
        else:
            plan["unchanged"].append(record["id"])
    if has_work(plan):
        plan["principles"] = memory.principles
        if plan["replaced"]:
            plan["principles"], plan["removed_principles"] = drop_sources(plan["principles"], set(plan["replaced"]))
    return plan


def has_work(plan: EpisodePlan) -> bool:
    """Whether the plan changes anything (else the alignment is a no-op and commits nothing)."""
    return bool(plan["fresh"] or plan["retry"])


def embed_episodes(embeddings: Embeddings, episodes: list[Episode], phases: Phases, chunk: int = 256) -> np.ndarray:
    """Unit vectors of ``episodes`` (shape ``(n, dim)``, float32), each distinct text embedded once, ``chunk`` per call.

    Episodes with the same embedding text (the same case) share its vector. Filled into one
    preallocated array, so 100 000 episodes cost 150 MB of vectors, not lists of floats.

    Raises:
        ValueError: if the embeddings return a shape other than one vector per text.
    """
    phases.start("embed", len(episodes))
    if not episodes:
        return np.zeros((0, 0), dtype=np.float32)
    texts = [embedding_text(e) for e in episodes]
    distinct = list(dict.fromkeys(texts))
    number = {text: i for i, text in enumerate(distinct)}
    inverse = np.fromiter((number[t] for t in texts), dtype=np.int64, count=len(texts))
    positions = np.argsort(inverse, kind="stable")  # episode positions grouped by distinct text, in text order
    bounds = np.searchsorted(inverse[positions], np.arange(len(distinct) + 1))
    out: np.ndarray | None = None
    embed = getattr(embeddings, "embed_documents_array", None) or embeddings.embed_documents
    for start in range(0, len(distinct), chunk):
        part = distinct[start : start + chunk]
        block = np.asarray(embed(part), dtype=np.float32)
        if block.ndim != 2 or len(block) != len(part):
            raise ValueError(f"embeddings returned {block.shape} for {len(part)} texts")
        if out is None:
            out = np.empty((len(episodes), block.shape[1]), dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block /= np.where(norms == 0, 1.0, norms)
        covered = positions[bounds[start] : bounds[start + len(part)]]
        out[covered] = block[inverse[covered] - start]
        phases.advance("embed", len(covered))
    assert out is not None
    return out


def scores_feedback(score: bool | None, chat: BaseChatModel) -> bool:
    """Whether an alignment judges its new records first: ``score`` if given, else only with the embedded model.

    The embedded model costs nothing but time; a hosted one costs a request per record, so it is asked for.
    """
    if score is not None:
        return bool(score)
    from memalign_graph.llamacpp import ChatLlamaCpp

    return isinstance(chat, ChatLlamaCpp)


async def judge_new_records(
    memory: VersionedMemory,
    plan: EpisodePlan,
    chat: BaseChatModel,
    *,
    concurrency: int,
    max_retries: int,
    backoff_s: float | None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> dict[str, ModelJudgment]:
    """The judge model's own judgment of each new record, made with the memory as it is, before it is aligned.

    What the calibration gate compares its head with (:mod:`memalign_graph.calibration`): a
    feedback file's ``judge_value`` is not trusted for that. Judged: the plan's *new* records
    (not replaced ones, whose old episode would show the model its expert value) with an expert
    value, that enter the head's training sample (:func:`~memalign_graph.calibration.training_sample`,
    at most :data:`~memalign_graph.calibration.MAX_TRAINING_EPISODES`): one judgment each, with
    precedent and calibration off. A record the model fails to judge is left unscored, and so are
    the ids in ``skip`` (their judgment is recorded already).

    Returns:
        Record id -> ``{"value", "scores", "model", "via": "alignment"}``.
    """
    from memalign_graph.calibration import MAX_TRAINING_EPISODES, training_sample
    from memalign_graph.memory_head import CALIBRATION_SEED, held_records
    from memalign_graph.working_memory import ajudge

    added = set(plan["added"])
    fresh = [r for r in plan["fresh"] if r["id"] in added and r.get("value") is not None and r["id"] not in skip]
    if not fresh or memory.spec.kind == "pairwise":
        return {}
    known = {i: v for i, v, _ in memory.episodes.verdicts(held_records(memory.proposed_principles))}
    known.update({r["id"]: r["value"] for r in fresh})
    ids = sorted(known)
    chosen = training_sample(ids, [str(known[i]) for i in ids], MAX_TRAINING_EPISODES, CALIBRATION_SEED)
    sampled = {ids[i] for i in chosen}
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(record: FeedbackRecord) -> tuple[str, ModelJudgment | None]:
        case = {k: record[k] for k in ("inputs", "outputs", "expectations") if k in record}  # type: ignore[literal-required]
        async with gate:
            try:
                judgment = await ajudge(
                    memory, case, model=chat, precedent="off", calibration="off", max_retries=max_retries,
                    backoff_s=backoff_s,
                )  # fmt: skip
            except (JudgeError, JudgmentParseError):
                return record["id"], None
        return record["id"], ModelJudgment(
            value=judgment["value"], scores=judgment["scores"], model=judgment["model"], via="alignment"
        )

    results = await asyncio.gather(*(one(r) for r in fresh if r["id"] in sampled))
    return {rid: judged for rid, judged in results if judged is not None}


# 3. distill


async def distill(
    chat: BaseChatModel,
    spec: JudgeSpec,
    plan: EpisodePlan,
    *,
    batch_size: int,
    token_budget: int | None,
    concurrency: int,
    max_retries: int,
    backoff_s: float | None,
    phases: Phases,
) -> Distillation:
    """The salient records of ``plan`` distilled into candidate principles (:func:`~memalign_graph.distill.adistill`).

    The plan's principles are shown to the LLM so it does not repeat them. Failed batches are
    reported in ``failed``, not raised.

    Raises:
        ValueError: if the model's known context window leaves no room for records.
    """
    started = time.perf_counter()
    to_distill = [r for r in plan["fresh"] + plan["retry"] if is_salient(r)]
    phases.start("distill", len(to_distill))
    result = await adistill(
        chat,
        spec,
        to_distill,
        plan["principles"],
        batch_size=batch_size,
        token_budget=token_budget,
        concurrency=concurrency,
        max_retries=max_retries,
        backoff_s=backoff_s,
        progress=phases.sink("distill"),
    )
    return Distillation(
        candidates=result.principles,
        distilled=result.distilled,
        failed=result.failed,
        refused=result.refused,
        llm_calls=result.calls,
        usage=dict(result.usage),
        timings={"distill_s": seconds_since(started)},
    )


# 4. consolidate


async def consolidate(
    chat: BaseChatModel,
    vectors: PrincipleVectors,
    plan: EpisodePlan,
    distillation: Distillation,
    *,
    threshold: float,
    max_retries: int,
    backoff_s: float | None,
    concurrency: int,
    phases: Phases,
    spec: JudgeSpec,
) -> Consolidation:
    """Each candidate against its most similar principle (existing, or a candidate before it), judged by the LLM.

    Pairs from cosine similarity ``threshold`` up go to the LLM however similar they are (a
    rule and its negation embed alike; see :func:`memalign_graph.semantic.related_pairs` and
    :func:`memalign_graph.classify.aclassify_pairs`). Fails safe: an unclassified pair counts as
    ``different``. Then every candidate that may add text to working memory (not found the
    ``same`` as another principle, nor repeating an active one's text) is classified by the LLM,
    once per distinct text, as a rule about the case or an instruction about the verdict
    (:func:`memalign_graph.classify.aclassify_directives`, given the judge ``spec``; the
    call sees the principles, not the feedback). A candidate it could not classify is listed
    as ``unchecked``.
    """
    candidates, principles = distillation["candidates"], plan["principles"]
    started = time.perf_counter()
    phases.start("consolidate", len(candidates))
    pairs = await asyncio.to_thread(related_pairs, principles, candidates, vectors, threshold=threshold)
    embed_s = seconds_since(started)
    phases.advance("consolidate", len(candidates))
    texts = {p["id"]: p["text"] for p in principles + candidates}
    calls, usage = CallCounter(), {}
    relations = await aclassify_pairs(
        chat,
        [(c, texts[c], e, texts[e]) for c, e, _ in pairs],
        max_retries=max_retries,
        usage=usage,
        backoff_s=backoff_s,
        counter=calls,
        concurrency=concurrency,
    )
    known = {text_key(p["text"]) for p in principles}  # a candidate repeating one adds no text: nothing to check
    new = [
        (c["id"], c["text"])
        for c in candidates
        if relations.get(c["id"], ("", "different"))[1] != "same" and text_key(c["text"]) not in known
    ]
    directives = await aclassify_directives(
        chat,
        spec,
        new,
        max_retries=max_retries,
        backoff_s=backoff_s,
        usage=usage,
        counter=calls,
        concurrency=concurrency,
    )
    kinds = ("same", "contradicts", "different")
    return Consolidation(
        pairs=[[c, e, similarity] for c, e, similarity in pairs],
        relations={c: [e, relation] for c, (e, relation) in relations.items()},
        counts={"pairs": len(pairs), **{kind: sum(r == kind for _, r in relations.values()) for kind in kinds}},
        directives=dict(directives),
        unchecked=[i for i, _ in new if i not in directives],
        llm_calls=calls.n,
        usage=usage,
        timings={"consolidate_embed_s": embed_s},
    )


# 5. govern


def govern(
    memory: VersionedMemory,
    plan: EpisodePlan,
    distillation: Distillation,
    consolidation: Consolidation,
    *,
    principles_policy: str | None,
    phases: Phases,
) -> Governance:
    """Admit, hold and merge the candidates (see :func:`memalign_graph.governance.govern_candidates`).

    Admitted candidates are merged into the plan's principles (a repeat adds its sources, a
    contradiction supersedes the older principle; :func:`memalign_graph.semantic.merge_principles`);
    held ones are filed as proposals for an expert (:func:`memalign_graph.governance.propose`).
    ``principles_policy`` can tighten the judge's stored policy for this alignment, never relax it.
    """
    started = time.perf_counter()
    candidates, relations = distillation["candidates"], consolidation["relations"]
    phases.start("merge", len(candidates))
    policy = effective_policy(memory.checkpoint.get("principles_policy"), principles_policy)
    admitted, held, admitted_relations = govern_candidates(
        plan["principles"],
        candidates,
        relations,
        policy=policy,
        values=list(memory.spec.values),  # type: ignore[arg-type]
        verdict_kinds=consolidation["directives"],
    )
    merged, added, absorbed = merge_principles(plan["principles"], admitted, relations=admitted_relations)
    proposed, pending_ids = propose(
        memory.proposed_principles,
        [c for c in candidates if c["id"] in held],
        held,
        relations,  # type: ignore[arg-type]
    )
    reasons = {p["id"]: p.get("held", "") for p in proposed}
    governance = Governance(
        policy=policy,
        principles=merged,
        new_principles=added,
        merged_principles=absorbed,
        proposed=proposed,
        proposed_principles={i: held.get(i) or reasons[i] for i in pending_ids},
        timings={"merge_s": seconds_since(started)},
    )
    phases.advance("merge", len(candidates))
    return governance


# 6. commit


def commit(
    memory: VersionedMemory,
    steps: AlignmentSteps,
    episodes: list[Episode],
    vectors: np.ndarray,
    *,
    author: str,
    reason: str | None,
    via: str,
    phases: Phases,
    timings: dict[str, float],
) -> AlignmentReport:
    """Commit the steps' results as one new version of ``memory``; call under its writer locks.

    The plan's new episodes (``episodes``, with their unit ``vectors``, shape ``(n, dim)``) are
    written into a draft of the episodic memory, every planned record into the ledger (marked
    undistilled where distillation failed, so the next alignment retries it), the governed
    principles and proposals into the checkpoint; :meth:`VersionedMemory.commit` writes them at
    once. ``timings`` (seconds measured before, such as ``embed_s``) go into the report.

    Raises:
        RuntimeError: if another writer committed since ``memory`` was loaded (nothing is written).
    """
    plan, distillation, governance = steps["plan"], steps["distillation"], steps["governance"]
    started = time.perf_counter()
    phases.start("index", len(episodes))
    draft = memory.episodes.draft()  # readers keep searching the committed store meanwhile
    draft.upsert_with_vectors(episodes, vectors)
    ledger = memory.records
    for record in plan["fresh"] + plan["retry"]:
        salient = is_salient(record)
        ledger[record["id"]] = LedgerEntry(
            hash=record_hash(record),
            distilled=(not salient) or record["id"] not in distillation["failed"],
            salient=salient,
            author=author,
            via=via,
        )
    index_s = seconds_since(started)
    phases.advance("index", len(episodes))
    started = time.perf_counter()
    phases.start("persist", 1)
    report = alignment_report(steps, version=memory.version, timings={**timings, "index_s": index_s})
    report.scored = sorted(e["id"] for e in episodes if "model_judgment" in e)
    report.version = memory.commit(
        governance["principles"],
        ledger,
        author=author,
        reason=reason or default_reason(report),
        episodes_changed=bool(plan["fresh"]),
        episodes=draft,
        new_episodes=episodes,
        proposed=governance["proposed"],
        details={"usage": dict(report.usage), "prompt_version": PROMPT_VERSION},
        embed_all=True,
    )
    report.timings["persist_s"] = seconds_since(started)
    phases.advance("persist", 1)
    return report


# The pipeline, as one call


async def aalign(
    memory: VersionedMemory,
    records: list[dict[str, Any]],
    *,
    model: str | BaseChatModel | None = None,
    base_url: str | None = None,
    batch_size: int = 50,
    token_budget: int | None = None,
    concurrency: int = 8,
    max_retries: int = 2,
    backoff_s: float | None = None,
    consolidate_threshold: float = CONSOLIDATE_THRESHOLD,
    author: str = "expert",
    reason: str | None = None,
    progress: ProgressCallback | Any = None,
    principles_policy: str | None = None,
    via: str = "align",
    score_feedback: bool | None = None,
    judged: dict[str, ModelJudgment] | None = None,
) -> AlignmentReport:
    """Align the judge to a batch of expert feedback (MemAlign's alignment step), as one new version.

    Every record becomes an episode (replacing any episode with its id);
    salient records (see :func:`memalign_graph.distill.is_salient`) are
    distilled into principles, de-duplicated against existing ones; one new
    version is committed. A record already aligned with identical content
    is a no-op; one aligned with different content replaces the old
    episode, and principles that came from it alone are removed and
    re-derived from the new content. Records whose distillation failed
    stay marked undistilled and are retried by the next call. The writer locks
    (this process's and the backend's) are held from the episodes step to the
    commit, so concurrent writers wait rather than lose a version.

    Configuration resolves as in the graphs (:class:`~memalign_graph.context.Context`): a
    ``model`` or ``base_url`` left ``None`` is read from ``MEMALIGN_MODEL`` / ``MEMALIGN_BASE_URL``,
    and without either the embedded offline model distils.

    Args:
        memory: the judge's memory.
        records: feedback records (see :mod:`memalign_graph.spec`), each with an ``id``.
        model: chat model for distillation: an instance, or a spec string such as
            ``"openai:gpt-4.1-mini"``, ``"embedded"``, or a model name served at ``base_url``
            (see :func:`resolve_chat_model`).
        base_url: base URL of an OpenAI-compatible server (vLLM, llama.cpp server, Ollama,
            LM Studio), e.g. ``"http://127.0.0.1:8000/v1"``; ``model`` is then its model name.
        batch_size: most records per distillation call.
        token_budget: most estimated prompt tokens of records per call (``None``: what the
            model's context window holds, see :func:`memalign_graph.distill.adistill`).
        concurrency: most distillation calls in flight.
        max_retries: retries of a distillation batch (and of the consolidation call) after a
            transient error (timeout, rate limit, connection, 5xx) or an unreadable answer;
            other errors (authentication, bad request) fail the batch at once.
        backoff_s: first wait before a retry, in seconds, doubled each retry, plus jitter
            (``None``: 0.5 s).
        consolidate_threshold: cosine similarity from which a new principle and
            its most similar principle (existing, or new before it) go to the LLM, however
            similar they are (embeddings alone never merge), which says whether they
            are the same (merged: union of sources), contradict (the newer
            replaces the older, which is kept in its ``history``) or differ.
        author: recorded with the new version.
        reason: one line recorded with the new version.
        progress: optional progress sink. A callable ``progress(phase, done, total)`` hears every
            phase (``"embed"``: episodes embedded, ``"distill"``: records distilled,
            ``"consolidate"``: principles compared, ``"merge"``, ``"index"``, ``"persist"``; the
            first two run at the same time); an object with only ``update(n)`` (e.g. a tqdm bar)
            is advanced per distilled record.
        principles_policy: ``"review"`` holds every new distilled principle for an expert
            for this alignment; ``"auto"`` or ``None`` apply the judge's stored policy
            (a run can tighten it, never relax it; see :mod:`memalign_graph.governance`).
        via: ``"align"`` or ``"review"``, kept with each record in the ledger (who owns it).
        score_feedback: judge each new record with an expert value once before aligning it
            (:func:`judge_new_records`: one model call per record that enters the calibration head's
            training sample, at most 2000); ``None``: only with the embedded model.
        judged: record id -> the model's own judgment of the case this library recorded before the
            expert answered (the review graph passes it); stored as the episode's ``model_judgment``.
            Never taken from a feedback record.

    Returns:
        An :class:`AlignmentReport`; held principles are in ``proposed_principles``.

    Raises:
        ValueError: for a ``principles_policy`` other than ``auto``/``review``; nothing is written.
        RecordError: for an invalid record; nothing is written.
        ValueError: for a model string that names no known form, or ``base_url`` with a model instance.
        ImportError: naming the extra to install, if the embedded model's runtime is missing.
        RuntimeError: if another process committed during this alignment.
    """
    started = time.perf_counter()
    if principles_policy is not None:
        check_policy(principles_policy, "align")
    valid = validate_feedback(memory.spec, records)
    chat = resolve_chat_model(model, base_url=base_url)
    async with memory.awriting():
        plan = plan_episodes(memory, valid)
        if not has_work(plan):
            report = alignment_report({"plan": plan}, version=memory.version, timings={})
        else:
            phases = Phases(progress)
            timings: dict[str, float] = {}
            recorded = dict(judged or {})
            if scores_feedback(score_feedback, chat):
                began = time.perf_counter()
                scored = await judge_new_records(
                    memory, plan, chat, concurrency=concurrency, max_retries=max_retries, backoff_s=backoff_s,
                    skip=set(recorded),
                )  # fmt: skip
                recorded.update(scored)
                timings["score_s"] = seconds_since(began)
            episodes = [episode_from_record(r, recorded.get(r["id"])) for r in plan["fresh"]]

            def embed() -> np.ndarray:
                began = time.perf_counter()
                vectors = embed_episodes(memory.embeddings, episodes, phases)
                timings["embed_s"] = seconds_since(began)
                return vectors

            embedding = asyncio.create_task(asyncio.to_thread(embed))  # overlaps the LLM's distillation
            distillation = await distill(
                chat,
                memory.spec,
                plan,
                batch_size=batch_size,
                token_budget=token_budget,
                concurrency=concurrency,
                max_retries=max_retries,
                backoff_s=backoff_s,
                phases=phases,
            )
            consolidation = await consolidate(
                chat,
                memory.principle_vectors,
                plan,
                distillation,
                threshold=consolidate_threshold,
                max_retries=max_retries,
                backoff_s=backoff_s,
                concurrency=concurrency,
                phases=phases,
                spec=memory.spec,
            )
            vectors = await embedding

            def govern_and_commit() -> AlignmentReport:
                steps = AlignmentSteps(plan=plan, distillation=distillation, consolidation=consolidation)
                steps["governance"] = govern(
                    memory, plan, distillation, consolidation, principles_policy=principles_policy, phases=phases
                )
                return commit(
                    memory,
                    steps,
                    episodes,
                    vectors,
                    author=author,
                    reason=reason,
                    via=via,
                    phases=phases,
                    timings=timings,
                )

            report = await asyncio.to_thread(govern_and_commit)
    report.seconds = seconds_since(started)
    return report


def align(memory: VersionedMemory, records: list[dict[str, Any]], **options: Any) -> AlignmentReport:
    """Synchronous :func:`aalign` (same arguments and errors).

    Safe to call any number of times in one process, with any model, from any thread (also
    one whose event loop is running): the work runs on one persistent background event loop
    (:func:`memalign_graph.models.run_sync`), so async clients a model cached in one call are
    still usable in the next.

    Example::

        report = memory.align(records, model="qwen2.5-7b-instruct", base_url="http://127.0.0.1:8000/v1")
        report.distilled, report.failed, report.version

    Raises:
        RuntimeError: as :func:`aalign`, or if called from a coroutine on the background loop
            itself (await :func:`aalign` there).
    """
    return run_sync(aalign(memory, records, **options))


align.__signature__ = inspect.signature(aalign)  # type: ignore[attr-defined]


__all__ = [
    "CONSOLIDATE_THRESHOLD",
    "AlignmentReport",
    "Phases",
    "ProgressCallback",
    "aalign",
    "align",
    "alignment_report",
    "commit",
    "consolidate",
    "distill",
    "embed_episodes",
    "govern",
    "has_work",
    "plan_episodes",
    "judge_new_records",
    "scores_feedback",
    "validate_feedback",
]
