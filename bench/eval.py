"""`make eval`: answer quality, scored automatically, per model and beside llama.cpp on the same GGUF.

Every question in bench/eval_questions.json (written for Parley, not taken from a data set) is asked afresh
(system prompt + one user message) and its reply checked automatically:

* ``any`` / ``all`` / ``none``: regexes (case-insensitive) of which at least one / every one / none must match;
* ``number``: the number must appear in the reply (``1,024`` and ``1024.0`` count as 1024);
* ``language``: the reply's language, guessed from its function words (``guess_language``), must be this one;
* ``min_words`` / ``max_words``, ``max_sentences``, ``items`` (list entries, or comma-separated parts);
* ``ends``: the reply must end by itself, before the token limit.

A reply that hits the token limit while its last 200 characters only repeat what it has already said is a
degenerate loop (``is_looping``), and so is one that Parley's loop guard stopped (finish reason "loop"): it
fails its question whatever else it says, and both kinds are counted per model. The score is the share of
questions passed, per category and overall.

Parley answers through the engine's own stateless path (``Engine.complete``: the model's chat template, the
batching generator), all questions submitted at once. llama.cpp (llama-cpp-python, when installed) answers
the same messages on the GGUF the model was imported from, with the chat template stored in that GGUF, one
question at a time. Both greedy, with the same token limit. Writes bench/eval.json and bench/eval.md.

    python -m bench.eval [--models NAME[,NAME]] [--max-tokens 256] [--skip-llama] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from engine.contract import Finished, SamplingParams
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.catalog import resolve_model
from engine.model.generator import Generator
from engine.model.registry import LoadedModel, load_model
from engine.model.runner import OnnxRunner
from engine.runtime.settings import Settings, load_settings

BENCH_DIR = Path(__file__).resolve().parent
QUESTIONS = BENCH_DIR / "eval_questions.json"
CATEGORIES = ("facts", "arithmetic", "languages", "instructions", "false-premise", "no-loop")
CHECKS = frozenset(
    {"any", "all", "none", "number", "language", "min_words", "max_words", "max_sentences", "items", "ends"}
)
LOOP_TAIL = 200  # characters at the end of a reply that must repeat an earlier span to call it a loop
# Measured on the 135M model's replies that hit the limit: loops cover 100% of their tail's 4-grams,
# ordinary replies (long e-mails) at most about 20%.
LOOP_GRAM, LOOP_SHARE = 4, 0.9
REPLY_CHARS = 200  # of each reply kept in eval.json: enough to see why a check failed, small enough to diff

# Function words by language: a handful of them identifies a sentence's language well, and a reply that
# is a bare name ("Paris.") has none, so it is never taken for the language that was asked for.
STOPWORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the and is are was were of to in it that this with for on you be have has not an at by from or "
        "they we he she what which there my your its can will would",
        "fr": "le la les un une des du de et est sont en au aux dans pour par sur avec que qui il elle je tu nous "
        "vous ce cette ces pas ne très bonjour salut c l d j qu n mais ou comment",
        "es": "el la los las un una unos unas de del y es son en que con por para se su sus lo al no está están "
        "muy pero como hay tiene yo tú usted hola",
        "de": "der die das den dem des ein eine einen einem und ist sind nicht mit von zu auf für im es ich du "
        "wir sie hat haben auch dass wie hallo",
        "it": "il lo la gli le un una di del della e è sono che con per non si ciao molto questo",
        "pt": "o os as um uma de do da dos das e é são em no na que com por para não olá muito",
    }.items()
}


@dataclass(frozen=True)
class Item:
    id: str
    category: str
    prompt: str
    checks: dict[str, Any]
    system: str | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str  # "stop", "length", or "loop" (Parley's loop guard stopped it)
    tokens: int

    @property
    def looped_at_limit(self) -> bool:
        return self.finish_reason == "length" and is_looping(self.text)

    @property
    def looped(self) -> bool:
        # A loop the guard cut short is still a loop: what was written before the cut is no answer either.
        return self.finish_reason == "loop" or self.looped_at_limit


def load_items(path: Path = QUESTIONS) -> list[Item]:
    """The questions, checked as they are read: a typo in a check must fail loudly, not pass silently."""
    items = []
    for raw in json.loads(path.read_text()):
        item = Item(raw["id"], raw["category"], raw["prompt"], raw["checks"], raw.get("system"))
        if item.category not in CATEGORIES:
            raise ValueError(f"{item.id}: unknown category {item.category!r}")
        if not item.checks or set(item.checks) - CHECKS:
            raise ValueError(f"{item.id}: checks must be some of {sorted(CHECKS)}, got {sorted(item.checks)}")
        if "language" in item.checks and item.checks["language"] not in STOPWORDS:
            raise ValueError(f"{item.id}: no stopwords for language {item.checks['language']!r}")
        for kind in ("any", "all", "none"):
            for pattern in item.checks.get(kind, ()):
                re.compile(pattern)
        items.append(item)
    if len({i.id for i in items}) != len(items):
        raise ValueError(f"{path}: question ids must be unique")
    return items


def _tokens(text: str) -> list[str]:
    # Numbers count as equal, so "Step 14: ..." repeating as "Step 15: ..." is the loop it is.
    return [re.sub(r"\d+", "0", t) for t in re.findall(r"\w+|[^\w\s]", text.lower())]


def is_looping(text: str, tail: int = LOOP_TAIL) -> bool:
    """True when the last ``tail`` characters only repeat what the reply has already said: they occur
    earlier as they are, or nearly all their word 4-grams occur at least twice in the reply. The n-grams
    catch a loop that drifts (one "historic" more per round, a day of the week left out)."""
    if len(text) <= tail:
        return False
    if text.find(text[-tail:]) < len(text) - tail:
        return True
    tokens = _tokens(text)
    counts = Counter(zip(*(tokens[i:] for i in range(LOOP_GRAM)), strict=False))
    end = _tokens(text[-tail:])[1:-1]  # its first and last words may be cut in half
    grams = list(zip(*(end[i:] for i in range(LOOP_GRAM)), strict=False))
    return bool(grams) and sum(counts[g] >= 2 for g in grams) >= LOOP_SHARE * len(grams)


def words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:['\u2019-][^\W_]+)*", text)


def sentences(text: str) -> int:
    # A full stop between digits (3.5) or without a following space is not a sentence end.
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if words(s)])


def list_items(text: str) -> int:
    """Entries of a bulleted or numbered list; failing that, the parts of a comma-separated one."""
    bullets = re.findall(r"^\s*(?:[-*•]|\d+[.)])\s+\S", text, flags=re.MULTILINE)
    if bullets:
        return len(bullets)
    lines = [line for line in text.splitlines() if words(line)]
    if len(lines) > 1:
        return len(lines)
    return len([part for part in re.split(r",|;|\band\b", text) if words(part)])


def numbers(text: str) -> list[float]:
    plain = re.sub(r"(?<=\d)[,\u202f\u00a0](?=\d{3}\b)", "", text)  # thousands separators
    return [float(n) for n in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", plain)]


def guess_language(text: str) -> str | None:
    """The language with the most function words in ``text``; None when there are none or it is a tie."""
    tokens = re.findall(r"[^\W\d_]+", text.lower())
    counts = Counter({lang: sum(t in stop for t in tokens) for lang, stop in STOPWORDS.items()})
    ranked = counts.most_common(2)
    if not ranked[0][1] or ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def failed_checks(item: Item, answer: Answer) -> list[str]:
    """The names of the checks the answer fails; empty when it passes."""
    text, c = answer.text.strip(), item.checks
    flags = re.IGNORECASE | re.DOTALL
    failed = []
    if answer.looped:
        failed.append("loop")
    if "any" in c and not any(re.search(p, text, flags) for p in c["any"]):
        failed.append("any")
    if "all" in c and not all(re.search(p, text, flags) for p in c["all"]):
        failed.append("all")
    if "none" in c and any(re.search(p, text, flags) for p in c["none"]):
        failed.append("none")
    if "number" in c and float(c["number"]) not in numbers(text):
        failed.append("number")
    if "language" in c and guess_language(text) != c["language"]:
        failed.append("language")
    count = len(words(text))
    if "min_words" in c and count < c["min_words"]:
        failed.append("min_words")
    if "max_words" in c and count > c["max_words"]:
        failed.append("max_words")
    if "max_sentences" in c and sentences(text) > c["max_sentences"]:
        failed.append("max_sentences")
    if "items" in c and list_items(text) != c["items"]:
        failed.append("items")
    if c.get("ends") and answer.finish_reason != "stop":
        failed.append("ends")
    return failed


def score(items: Sequence[Item], answers: Sequence[Answer]) -> dict[str, Any]:
    """Overall and per-category shares of questions passed, loops, and what each question got."""
    results = {item.id: failed_checks(item, answer) for item, answer in zip(items, answers, strict=True)}
    categories: dict[str, list[bool]] = {}
    for item in items:
        categories.setdefault(item.category, []).append(not results[item.id])
    passed = sum(not failed for failed in results.values())
    return {
        "overall": round(passed / len(items), 3),
        "passed": passed,
        "questions": len(items),
        "categories": {c: round(sum(v) / len(v), 3) for c in CATEGORIES if (v := categories.get(c))},
        "loops_at_limit": sum(a.looped_at_limit for a in answers),
        "guard_stops": sum(a.finish_reason == "loop" for a in answers),
        "mean_reply_tokens": round(sum(a.tokens for a in answers) / len(answers), 1),
        "items": {
            item.id: {
                "pass": not results[item.id],
                "failed": results[item.id],
                "finish": answer.finish_reason,
                "tokens": answer.tokens,
                "reply": answer.text[:REPLY_CHARS],
            }
            for item, answer in zip(items, answers, strict=True)
        },
    }


def messages(item: Item, system: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": item.system or system}, {"role": "user", "content": item.prompt}]


@asynccontextmanager
async def parley_engine(settings: Settings, model: LoadedModel, device: str, waiting: int) -> AsyncIterator[Engine]:
    runner = OnnxRunner(
        model, device=device, threads=settings.threads, max_len=settings.context_tokens, rows=settings.max_batch
    )
    # No resident caches: every question is asked afresh. Room for all of them to wait at once.
    async with Generator(runner, max_waiting=waiting, cache_bytes=0, prefill_chunk=settings.prefill_chunk) as gen:
        # Engine.complete is stateless: it never touches the store, so this client never connects.
        redis = Redis()
        try:
            yield Engine(settings, Store(redis, ttl=settings.conversation_ttl, window=1), gen, model)
        finally:
            await redis.aclose()


async def answer_with_engine(
    engine: Engine, items: Sequence[Item], system: str, max_tokens: int
) -> tuple[list[Answer], float]:
    """Every question at once, as many people asking together: the generator batches them."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    async def one(item: Item) -> Answer:
        finished = None
        async for event in engine.complete(messages(item, system), params):
            if isinstance(event, Finished):
                finished = event
        if finished is None:
            raise RuntimeError(f"{item.id}: the engine ended without a Finished event")
        return Answer(finished.text, finished.finish_reason, finished.completion_tokens)

    start = time.perf_counter()
    answers = await asyncio.gather(*(one(item) for item in items))
    return answers, time.perf_counter() - start


def answer_with_llama(
    gguf: Path, items: Sequence[Item], system: str, max_tokens: int, context: int
) -> tuple[list[Answer], float]:
    from llama_cpp import Llama

    # create_chat_completion renders the chat template stored in the GGUF (for SmolLM2: the same prompt
    # token ids as Parley's), and temperature 0 is greedy there.
    llm = Llama(model_path=str(gguf), n_ctx=context, n_threads=os.cpu_count(), seed=0, verbose=False)
    answers = []
    start = time.perf_counter()
    for item in items:
        out = llm.create_chat_completion(
            messages=messages(item, system),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0.0,
            repeat_penalty=1.0,
            seed=0,
        )
        choice = out["choices"][0]  # type: ignore[index]
        finish = "length" if choice["finish_reason"] == "length" else "stop"
        answers.append(Answer(choice["message"]["content"] or "", finish, out["usage"]["completion_tokens"]))  # type: ignore[index]
    return answers, time.perf_counter() - start


def llama_unusable(gguf: Path) -> str | None:
    """Why llama.cpp cannot answer on ``gguf`` here, or None when it can. A llama.cpp built for another CPU
    dies of an illegal instruction as it loads a model, which would take this process and the results
    gathered so far with it: so it first loads the vocabulary in a child process."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "not installed"
    probe = "import sys, llama_cpp; llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)"
    done = subprocess.run([sys.executable, "-c", probe, str(gguf)], capture_output=True, text=True, check=False)
    if done.returncode == -signal.SIGILL:
        return "crashes here (built for another CPU)"
    if done.returncode:
        return f"fails here: {(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1][:80]}"
    return None


def log(message: str) -> None:
    print(f"eval: {message}", file=sys.stderr, flush=True)


async def answer_with_parley(
    settings: Settings, model: LoadedModel, device: str, items: Sequence[Item], max_tokens: int
) -> tuple[list[Answer], float]:
    async with parley_engine(settings, model, device, waiting=len(items)) as engine:
        return await answer_with_engine(engine, items, settings.system_prompt, max_tokens)


def evaluate(args: argparse.Namespace, items: list[Item], settings: Settings) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    ggufs: dict[Path, str] = {}  # each GGUF gets one llama.cpp row, whichever models were imported from it
    for name in args.models:
        info = resolve_model(name, settings.models_path, device=args.device)
        model = load_model(info.path)
        log(f"{info.name} ({info.precision}): {len(items)} questions")
        answers, wall = asyncio.run(answer_with_parley(settings, model, args.device, items, args.max_tokens))
        runs.append(
            {"engine": "parley", "model": info.name, "precision": info.precision, "wall_s": round(wall, 1)}
            | score(items, answers)
        )
        source = Path(str(info.manifest.get("gguf") or info.manifest.get("source", "")))
        if info.manifest.get("source_kind") == "gguf" and source.is_file():
            ggufs.setdefault(source, info.name)
    if args.skip_llama:
        return runs
    for gguf in ggufs:
        run: dict[str, Any] = {"engine": "llama.cpp", "model": gguf.name, "precision": "gguf"}
        if status := llama_unusable(gguf):
            runs.append(run | {"status": status})
            continue
        version = importlib.metadata.version("llama-cpp-python")
        log(f"llama.cpp {version} on {gguf.name}: {len(items)} questions")
        answers, wall = answer_with_llama(gguf, items, settings.system_prompt, args.max_tokens, settings.context_tokens)
        runs.append(run | {"version": version, "wall_s": round(wall, 1)} | score(items, answers))
    return runs


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def render(results: dict[str, Any]) -> str:
    runs, counts = results["runs"], results["categories"]
    lines = [
        "# Answer quality (`make eval`)",
        "",
        f"{results['questions']} questions written for Parley (`bench/eval_questions.json`), each asked afresh and "
        "checked automatically (patterns, numbers, language, length, list items; see `bench/eval.py`). "
        f"Greedy, at most {results['max_tokens']} new tokens, system prompt: “{results['system_prompt']}”. "
        "A reply that loops fails its question: one that hits the token limit while its last 200 characters only "
        "repeat what it already said (*loops at the limit*), or one Parley's loop guard stopped (finish reason "
        "`loop`). Parley answers all questions at once (batched), llama.cpp one at a time: wall times are not a "
        "speed comparison (`make bench` is).",
        "",
        "| model | engine | overall | "
        + " | ".join(f"{c} ({counts.get(c, 0)})" for c in CATEGORIES)
        + " | loops at the limit | stopped by loop guard | mean reply tokens | wall s |",
        "|---|---|---:|" + "---:|" * len(CATEGORIES) + "---:|---:|---:|---:|",
    ]
    for run in runs:
        engine = "Parley" if run["engine"] == "parley" else f"llama.cpp {run.get('version', '')}".strip()
        head = f"| {run['model']} ({run['precision']}) | {engine} |"
        if "status" in run:
            lines.append(head + f" {run['status']} |" + " |" * (len(CATEGORIES) + 4))
            continue
        cats = " | ".join(_pct(run["categories"][c]) if c in run["categories"] else "" for c in CATEGORIES)
        lines.append(
            f"{head} **{_pct(run['overall'])}** ({run['passed']}/{run['questions']}) | {cats} "
            f"| {run['loops_at_limit']} | {run['guard_stops']} | {run['mean_reply_tokens']:.0f} | {run['wall_s']:.0f} |"
        )
    lines += [
        "",
        "What each question got (reply, failed checks) is in `bench/eval.json`.",
        "",
        f"Command: `{results['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default="", help="model folder names, comma-separated (default: the configured model)"
    )
    parser.add_argument("--max-tokens", type=int, default=256, help="new tokens per reply at most")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--skip-llama", action="store_true", help="no llama.cpp rows")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick try)")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--out", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    settings = load_settings()
    args.models = [n.strip() for n in (args.models or settings.model).split(",") if n.strip()]
    if not args.models:
        parser.error("--models named no model")
    items = load_items(args.questions)[: args.limit or None]
    runs = evaluate(args, items, settings)
    results = {
        "command": shlex.join(["python", "-m", "bench.eval", *argv]),
        "questions": len(items),
        "categories": dict(Counter(item.category for item in items)),
        "max_tokens": args.max_tokens,
        "system_prompt": settings.system_prompt,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (args.out / "eval.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
