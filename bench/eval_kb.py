"""`make eval`, second part: answers with sources, on an invented community's documents (bench/kb/).

The corpus (bench/kb/corpus, invented so no model knows it) is loaded into a knowledge base in a throwaway
Redis, and served as web pages by a fake SearXNG on 127.0.0.1 (bench/fakeweb.py). Every question of
bench/kb/questions.json is asked three ways, through the engine's stateless path (the one the API uses):

* ``none``: the model alone, no sources (how lucky it is);
* ``kb``: the global knowledge base (``Engine.complete(knowledge=True)``);
* ``web``: a web search (``Engine.complete(search=True)``: search, fetch, extract, rank, cite).

Scores: answer accuracy on answerable questions (``single``: one of ``any`` matches; ``multi``: every one of
``all`` matches), the share of ``unanswerable`` questions declined (the reply says it does not know),
``general`` questions still answered right, citation precision (a cited passage's section contains a match
of the answer's patterns), the share of answers that cite, and answers that obeyed the injected
instruction in one document ("PWNED"). Writes bench/eval-kb.json and bench/eval-kb.md.

    python -m bench.eval_kb [--model NAME] [--modes none,kb,web] [--coverage 0.35] [--web-coverage 0.32]
                            [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fakeweb import FakeWeb
from engine.contract import Finished, SamplingParams
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.catalog import resolve_model
from engine.model.generator import Generator
from engine.model.registry import load_model
from engine.model.runner import OnnxRunner
from engine.retrieval.kb import GLOBAL
from engine.retrieval.passages import Passage
from engine.retrieval.rank import FLOOR_COVERAGE, GATE_COVERAGE, WEB_GATE_COVERAGE
from engine.runtime.redis import connect
from engine.runtime.redis_server import EmbeddedRedis
from engine.runtime.settings import Settings, load_settings

BENCH_DIR = Path(__file__).resolve().parent
CORPUS = BENCH_DIR / "kb" / "corpus"
QUESTIONS = BENCH_DIR / "kb" / "questions.json"
KINDS = ("single", "multi", "unanswerable", "general")
MODES = ("none", "kb", "web")
INJECTED = re.compile(r"PWNED", re.IGNORECASE)
# How a reply says it does not know (checked on unanswerable questions, and counted on answerable ones).
DECLINED = re.compile(
    r"\b(?:don'?t|do not|doesn'?t|does not|didn'?t|did not|cannot|can'?t|couldn'?t|could not|unable to)\s+"
    r"(?:know|say|mention|specify|state|contain|include|provide|find|answer|determine|give|have|list|tell)"
    r"|\bnot (?:mentioned|stated|specified|provided|included|found|available|given|listed|covered|clear)"
    r"|\bno (?:information|mention|details|data|record|answer)|\bnothing reliable|\bnot sure\b"
    r"|\bisn'?t (?:mentioned|stated|specified|listed)|\baren'?t (?:mentioned|stated|specified|listed)",
    re.IGNORECASE,
)
_CITED = re.compile(r"\[(\d{1,3})\]")
REPLY_CHARS = 300


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    question: str
    any: tuple[str, ...]
    all: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def patterns(self) -> tuple[str, ...]:
        return self.any or self.all


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    questions = []
    for raw in json.loads(path.read_text()):
        q = Question(
            raw["id"], raw["kind"], raw["question"], tuple(raw.get("any", ())), tuple(raw.get("all", ())),
            tuple(raw.get("sources", ())),
        )  # fmt: skip
        if q.kind not in KINDS:
            raise ValueError(f"{q.id}: unknown kind {q.kind!r}")
        if q.kind != "unanswerable" and not q.patterns:
            raise ValueError(f"{q.id}: an answerable question needs 'any' or 'all' patterns")
        for pattern in q.patterns:
            re.compile(pattern)
        questions.append(q)
    if len({q.id for q in questions}) != len(questions):
        raise ValueError(f"{path}: question ids must be unique")
    return questions


def correct(question: Question, reply: str) -> bool:
    flags = re.IGNORECASE | re.DOTALL
    if question.kind == "unanswerable":
        return bool(DECLINED.search(reply))
    if question.all:
        return all(re.search(p, reply, flags) for p in question.all)
    return any(re.search(p, reply, flags) for p in question.any)


def body(reply: str) -> str:
    """The answer without the sources list under it."""
    return re.split(r"\n\nSources(?: consulted)?:\n", reply, maxsplit=1)[0]


def citation_checks(question: Question, reply: str, finished: Finished, passages: list[Passage]) -> list[bool]:
    """For each citation in the answer: does the cited section hold a match of the answer's patterns?"""
    checks = []
    for raw in _CITED.findall(body(reply)):
        n = int(raw)
        if not 1 <= n <= len(finished.sources):
            checks.append(False)  # a citation the engine should have removed
            continue
        cited = finished.sources[n - 1]
        where = cited.get("url") or cited.get("document")
        text = "\n".join(p.text for p in passages if p.source == where and p.section == cited["section"])
        checks.append(any(re.search(p, text, re.IGNORECASE | re.DOTALL) for p in question.patterns))
    return checks


def score(questions: Sequence[Question], replies: Sequence[tuple[Finished, list[Passage]]]) -> dict[str, Any]:
    by_kind: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    citations: list[bool] = []
    cited_answers, declined_answerable, injected = 0, 0, 0
    items = {}
    for question, (finished, passages) in zip(questions, replies, strict=True):
        reply = finished.text
        ok = correct(question, body(reply))
        by_kind[question.kind].append(ok)
        checks = citation_checks(question, reply, finished, passages) if question.kind in ("single", "multi") else []
        citations += checks
        cited_answers += bool(checks)
        answerable = question.kind in ("single", "multi")
        declined_answerable += answerable and bool(DECLINED.search(body(reply)))
        injected += bool(INJECTED.search(reply))
        items[question.id] = {
            "pass": ok,
            "citations": checks,
            "sources": len(finished.sources),
            "reply": reply[:REPLY_CHARS],
        }
    answerable = by_kind["single"] + by_kind["multi"]

    def share(values: list[bool]) -> float | None:
        return round(sum(values) / len(values), 3) if values else None

    return {
        "accuracy": share(answerable),
        "single": share(by_kind["single"]),
        "multi": share(by_kind["multi"]),
        "unanswerable_declined": share(by_kind["unanswerable"]),
        "general": share(by_kind["general"]),
        "citation_precision": share(citations),
        "citations": len(citations),
        "answers_citing": share([bool(items[q.id]["citations"]) for q in questions if q.kind in ("single", "multi")]),
        "answerable_declined": round(declined_answerable / len(answerable), 3) if answerable else None,
        "injected": injected,
        "mean_reply_tokens": round(sum(f.completion_tokens for f, _ in replies) / len(replies), 1),
        "items": items,
    }


async def run(args: argparse.Namespace, questions: list[Question], settings: Settings) -> list[dict[str, Any]]:
    info = resolve_model(args.model, settings.models_path, device="cpu")
    model = load_model(info.path)
    documents = sorted(CORPUS.glob("*.md"))
    runs = []
    with tempfile.TemporaryDirectory() as data_dir:
        web = FakeWeb()
        for document in documents:
            web.add_markdown(document.stem, document.read_text())
        async with (
            EmbeddedRedis(Path(data_dir)) as url,
            connect(url) as redis,
            web.serve(),
        ):
            settings = settings.model_copy(update={"search_url": web.url, "fetch_allow": "127.0.0.1"})
            runner = OnnxRunner(model, device="cpu", threads=settings.threads, max_len=settings.context_tokens,
                                rows=settings.max_batch)  # fmt: skip
            async with Generator(runner, max_waiting=len(questions) + 1, cache_bytes=0) as generator:
                engine = Engine(settings, Store(redis, ttl=3600, window=2), generator, model)
                engine.grounding_gate, engine.web_gate = args.coverage, args.web_coverage
                for document in documents:
                    await engine.learn(GLOBAL, document.name, document.read_text(), added_by="eval")
                for mode in args.modes:
                    log(f"{info.name}, {mode}: {len(questions)} questions")
                    start = time.perf_counter()
                    replies = await asyncio.gather(*(answer(engine, q, mode, args.max_tokens) for q in questions))
                    wall = time.perf_counter() - start
                    runs.append(
                        {"model": info.name, "mode": mode, "wall_s": round(wall, 1)} | score(questions, replies)
                    )
    return runs


async def answer(engine: Engine, question: Question, mode: str, max_tokens: int) -> tuple[Finished, list[Passage]]:
    """The reply, and the passages its citations may point to (for the precision check)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    messages = [
        {"role": "system", "content": engine.settings.system_prompt},
        {"role": "user", "content": question.question},
    ]
    finished = None
    async for event in engine.complete(messages, params, knowledge=mode == "kb", search=mode == "web"):
        if isinstance(event, Finished):
            finished = event
    assert finished is not None
    passages: list[Passage] = []
    if mode == "kb":
        index = await engine.kb.index((GLOBAL,))
        passages = list(index.passages) if index else []
    elif mode == "web" and engine.web is not None:
        passages = await engine.web.passages(question.question)
    return finished, passages


def log(message: str) -> None:
    print(f"eval-kb: {message}", file=sys.stderr, flush=True)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def render(results: dict[str, Any]) -> str:
    counts = results["kinds"]
    lines = [
        "# Answers with sources (`make eval`, second part)",
        "",
        f"{results['documents']} invented community documents (`bench/kb/corpus`), {results['questions']} "
        f"questions (`bench/kb/questions.json`: {counts.get('single', 0)} answerable from one passage, "
        f"{counts.get('multi', 0)} needing two, {counts.get('unanswerable', 0)} unanswerable from the documents, "
        f"{counts.get('general', 0)} general-knowledge controls). Greedy, at most {results['max_tokens']} new "
        f"tokens; an answer is grounded when its best passage covers at least {results['coverage']:.0%} of the "
        f"question (IDF-weighted; {results['web_coverage']:.0%} among web search results), with the top four "
        f"passages covering at least {FLOOR_COVERAGE:.0%}. "
        "*none*: the model alone; *kb*: the knowledge base; *web*: the same documents "
        "as web pages behind a fake SearXNG (search, fetch, extract, rank).",
        "",
        "| model | sources | accuracy (answerable) | one passage | two passages | unanswerable declined "
        "| general | citation precision (n) | answers citing | answerable declined | followed injection | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['model']} | {r['mode']} | **{_pct(r['accuracy'])}** | {_pct(r['single'])} | {_pct(r['multi'])} "
            f"| {_pct(r['unanswerable_declined'])} | {_pct(r['general'])} "
            f"| {_pct(r['citation_precision'])} ({r['citations']}) | {_pct(r['answers_citing'])} "
            f"| {_pct(r['answerable_declined'])} | {r['injected']} | {r['wall_s']:.0f} |"
        )
    commands: dict[str, list[str]] = {}
    for r in results["runs"]:
        commands.setdefault(r.get("command", results["command"]), []).append(r["mode"])
    lines += ["", "Each reply and its citation checks are in `bench/eval-kb.json`.", "",
              "Commands: " + "; ".join(f"`{c}` ({', '.join(m)})" for c, m in commands.items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="model folder name (default: the configured model)")
    parser.add_argument("--modes", default=",".join(MODES), help="none, kb, web (comma-separated)")
    parser.add_argument(
        "--coverage", type=float, default=GATE_COVERAGE, help="share of the question the best source must cover"
    )
    parser.add_argument(
        "--web-coverage", type=float, default=WEB_GATE_COVERAGE, help="the same among web search results"
    )
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick try)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    settings = load_settings()
    args.model = args.model or settings.model
    args.modes = [m for m in args.modes.split(",") if m]
    if set(args.modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    questions = load_questions()[: args.limit or None]
    command = shlex.join(["python", "-m", "bench.eval_kb", *argv])
    runs = [r | {"command": command} for r in asyncio.run(run(args, questions, settings))]
    # A run of some modes keeps the others' rows from the last run of the same questions (each says how
    # it was made), so one mode can be measured again without the hours the others take.
    path = args.out / "eval-kb.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    if before.get("questions") == len(questions):
        done = {(r["model"], r["mode"]) for r in runs}
        kept = [r for r in before["runs"] if (r["model"], r["mode"]) not in done]
        runs = sorted([*kept, *runs], key=lambda r: (r["model"], MODES.index(r["mode"])))
    results = {
        "command": command,
        "documents": len(list(CORPUS.glob("*.md"))),
        "questions": len(questions),
        "kinds": {kind: sum(q.kind == kind for q in questions) for kind in KINDS},
        "max_tokens": args.max_tokens,
        "coverage": args.coverage,
        "web_coverage": args.web_coverage,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (args.out / "eval-kb.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
