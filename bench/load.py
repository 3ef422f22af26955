"""Load benchmark: many conversations at once through the generator, batched vs one at a time.

Conversations arrive as a Poisson process (mean gap ``--gap`` s), each asks ``--turns`` questions in a
row (a follow-up carries the history, as the engine's prompts do), with a mix of short and long first
questions. Everything is greedy and measured on the client side of ``Generator.stream``: time to first
token (from the request to its first text), inter-token latency (between consecutive pieces of text),
and aggregate decode throughput (reply tokens over the wall time of the whole run). Engines, measured in
the same run on the same prompts:

- ``one-at-a-time``: one cache row and no resident caches (the engine before batching);
- ``batched``: ``--rows`` rows and resident conversation caches (the default configuration);
- ``batched, no cache``: batched, every follow-up prefills its whole history again.

A second part times a follow-up in a conversation of about 1500 tokens: with its cache resident vs
prefilled again. Results go into bench/results.json (key "load") and a section of bench/results.md.

    python -m bench.load [--concurrency 1 4 16 32] [--turns 2] [--reply 32] [--rows 16] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.contract import Delta, Finished, SamplingParams
from engine.model.catalog import BUILTIN_NAME, resolve_model
from engine.model.generator import Generator
from engine.model.registry import LoadedModel, load_model
from engine.model.runner import OnnxRunner
from engine.runtime.settings import load_settings

BENCH_DIR = Path(__file__).resolve().parent
SHORT = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Why is the sky blue?",
    "Give me two tips for learning to cook.",
    "What do owls eat?",
    "Name three prime numbers.",
]
FOLLOW_UPS = ["Tell me more.", "Can you say that more simply?", "Why is that?", "Give an example."]
BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"


def _long_question(rng: random.Random, items: int) -> str:
    colours = ["red", "blue", "green", "yellow", "black", "white"]
    facts = " ".join(f"Box {i} is {rng.choice(colours)}." for i in range(items))
    return f"Here is a list. {facts} Which colour appears most often?"


@dataclass
class Turn:
    ttft: float
    gaps: list[float]
    tokens: int
    decode_tok_s: float  # this reply's own decode speed (first token to last)
    follow_up: bool
    reused: bool


@dataclass
class Run:
    turns: list[Turn] = field(default_factory=list)
    wall: float = 0.0
    model_time: dict[str, float] = field(default_factory=dict)  # the generator's ModelTime over the run


def encode(model: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
    text = model.template.render(messages)
    return list(model.tokenizer.encode(text, add_special_tokens=False).ids)


async def conversation(
    gen: Generator, model: LoadedModel, key: str, first: str, turns: int, reply: int, rng: random.Random, run: Run
) -> None:
    messages: list[dict[str, str]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": first if turn == 0 else rng.choice(FOLLOW_UPS)})
        ids = encode(model, messages)
        reused_before = gen.reused_tokens
        start = last = time.perf_counter()
        gaps: list[float] = []
        ttft, answer = 0.0, ""
        async for event in gen.stream(ids, SamplingParams(max_tokens=reply), cache_key=key):
            now = time.perf_counter()
            if isinstance(event, Delta):
                if not ttft:
                    ttft = now - start
                else:
                    gaps.append(now - last)
                last = now
            elif isinstance(event, Finished):
                answer = event.text
                reused = gen.reused_tokens > reused_before
                run.turns.append(Turn(ttft, gaps, event.completion_tokens, event.tokens_per_second, turn > 0, reused))
        messages.append({"role": "assistant", "content": answer})
        await asyncio.sleep(rng.expovariate(1 / 0.05))  # the person reads, then types the next question


async def sweep_point(
    gen: Generator, model: LoadedModel, concurrency: int, turns: int, reply: int, gap: float, seed: int
) -> Run:
    rng = random.Random(seed)
    firsts = [
        _long_question(rng, rng.choice([40, 80, 120])) if rng.random() < 0.3 else rng.choice(SHORT)
        for _ in range(concurrency)
    ]
    run = Run()
    before = dataclasses.asdict(gen.time)
    start = time.perf_counter()

    async def arrive(i: int, delay: float) -> None:
        await asyncio.sleep(delay)
        await conversation(gen, model, f"c{seed}-{i}", firsts[i], turns, reply, random.Random(seed + i), run)

    delays, t = [], 0.0
    for _ in range(concurrency):
        delays.append(t)
        t += rng.expovariate(1 / gap)
    await asyncio.gather(*(arrive(i, d) for i, d in enumerate(delays)))
    run.wall = time.perf_counter() - start
    run.model_time = {k: v - before[k] for k, v in dataclasses.asdict(gen.time).items()}
    return run


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(run: Run) -> dict[str, Any]:
    gaps = [g for t in run.turns for g in t.gaps]
    ttfts = [t.ttft for t in run.turns]
    follow = [t.ttft for t in run.turns if t.follow_up]
    tokens = sum(t.tokens for t in run.turns)
    mt = run.model_time
    return {
        "requests": len(run.turns),
        "reply_tokens": tokens,
        "wall_s": run.wall,
        "tokens_per_s": tokens / run.wall,
        "ttft_p50_ms": 1000 * (_pct(ttfts, 0.5) or 0),
        "ttft_p99_ms": 1000 * (_pct(ttfts, 0.99) or 0),
        "itl_p50_ms": 1000 * (_pct(gaps, 0.5) or 0),
        "itl_p99_ms": 1000 * (_pct(gaps, 0.99) or 0),
        "follow_up_ttft_p50_ms": 1000 * (_pct(follow, 0.5) or 0),
        "decode_tok_s_p50": _pct([t.decode_tok_s for t in run.turns if t.tokens > 1], 0.5) or 0,
        "follow_ups_from_cache": sum(t.reused for t in run.turns if t.follow_up),
        "follow_ups": len(follow),
        # Decode steps alone (prompt reading left out): what batching itself buys.
        "decode_step_tok_s": mt["decode_tokens"] / mt["decode_seconds"] if mt["decode_seconds"] else 0,
        "rows_per_decode_step": mt["decode_tokens"] / mt["decode_steps"] if mt["decode_steps"] else 0,
        "prefill_share": mt["prefill_seconds"] / run.wall,
        "decode_share": mt["decode_seconds"] / run.wall,
    }


async def long_follow_up(model: LoadedModel, device: str, threads: int, reply: int, repeats: int) -> dict[str, Any]:
    """A follow-up in a ~1500-token conversation: cache resident vs the history prefilled again."""
    rng = random.Random(7)
    question = _long_question(rng, 230)
    runner = OnnxRunner(model, device=device, threads=threads, max_len=2048, rows=2)
    warm, cold, history = [], [], 0
    async with Generator(runner, cache_bytes=1 << 30) as gen:
        for i in range(repeats):
            messages = [{"role": "user", "content": question}]
            answer = ""
            async for event in gen.stream(encode(model, messages), SamplingParams(max_tokens=reply), cache_key=f"w{i}"):
                if isinstance(event, Finished):
                    answer = event.text
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Are you sure?"}]
            ids = encode(model, messages)
            history = len(ids)
            for key, into in ((f"w{i}", warm), (f"cold{i}", cold)):
                start = time.perf_counter()
                async for event in gen.stream(ids, SamplingParams(max_tokens=1), cache_key=key):
                    if isinstance(event, Finished):
                        into.append(time.perf_counter() - start)
    w, c = statistics.median(warm), statistics.median(cold)
    return {"history_tokens": history, "warm_ttft_ms": 1000 * w, "cold_ttft_ms": 1000 * c, "ratio": w / c}


def step_costs(model: LoadedModel, device: str, threads: int, rows: int, repeats: int = 8) -> dict[str, Any]:
    """Milliseconds (median) of one decode step for 1..``rows`` rows and of one prompt chunk, every row
    holding 300 positions: what the scheduler's iterations are made of."""
    runner = OnnxRunner(model, device=device, threads=threads, max_len=1024, rows=rows)
    rng = np.random.default_rng(0)
    for row in range(rows):
        runner.run(row, rng.integers(100, 1000, (1, 300)), [0])

    def median_ms(count: int, new: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner.run(0, rng.integers(100, 1000, (count, new)), [300] * count)
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    sizes = sorted({1, 2, 4, 8, rows} & set(range(1, rows + 1)))
    return {
        "decode_ms": {str(n): median_ms(n, 1) for n in sizes},
        "chunk_ms": {str(c): median_ms(1, c) for c in (16, 32, 64, 128)},
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    model = load_model(resolve_model(args.model, settings.models_path, device=args.device).path)
    engines = {
        "one-at-a-time": {"rows": 1, "cache_bytes": 0},
        "batched": {"rows": args.rows, "cache_bytes": 1 << 30},
        "batched, no cache": {"rows": args.rows, "cache_bytes": 0},
    }
    results: dict[str, Any] = {
        "sweep": {},
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"model": model.info.precision},
    }
    for name, cfg in engines.items():
        runner = OnnxRunner(model, device=args.device, threads=args.threads, max_len=args.context, rows=cfg["rows"])
        points = args.concurrency if name != "batched, no cache" else [c for c in args.concurrency if c > 1]
        async with Generator(runner, max_waiting=1024, cache_bytes=cfg["cache_bytes"], prefill_chunk=args.chunk) as gen:
            await sweep_point(gen, model, 1, 1, 4, 0.01, seed=0)  # warm-up
            for c in points:
                print(f"[load] {name}: {c} conversations", flush=True)
                run = await sweep_point(gen, model, c, args.turns, args.reply, args.gap, seed=c)
                results["sweep"].setdefault(str(c), {})[name] = summarise(run)
    print("[load] step costs", flush=True)
    results["steps"] = step_costs(model, args.device, args.threads, args.rows)
    print("[load] long follow-up", flush=True)
    repeats = 2 if args.quick else 3
    results["long_follow_up"] = await long_follow_up(model, args.device, args.threads, args.reply, repeats)
    results["bytes_per_cached_token"] = OnnxRunner(model, device=args.device, max_len=16).bytes_per_token
    return results


def render(results: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        "## Many conversations at once (`python -m bench.load`)",
        "",
        f"Greedy, {results['config']['turns']} turns per conversation, replies up to "
        f"{results['config']['reply']} tokens, Poisson arrivals (mean gap {results['config']['gap']} s), "
        f"{results['config']['rows']} cache rows when batched, {results['config']['model']} on "
        f"{results['config']['device']}, prompt chunks of {results['config']['chunk']} tokens while others decode; "
        "client-side times. tok/s: all reply tokens over the run's wall time (prompt reading included). "
        "Decode steps: reply tokens per second of decode-step time, prompt chunks left out (what batching "
        "itself buys), with the mean rows per step. Reply tok/s: one reply's own speed (median).",
        "",
        "| conversations | engine | tok/s | vs one-at-a-time | decode steps tok/s (rows/step) | vs one-at-a-time "
        "| TTFT p50 / p99 ms | ITL p50 / p99 ms | follow-up TTFT p50 ms | follow-ups from cache | reply tok/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, engines in results["sweep"].items():
        base = engines["one-at-a-time"]
        for name, r in engines.items():
            lines.append(
                f"| {c} | {name} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x "
                f"| {r['decode_step_tok_s']:.0f} ({r['rows_per_decode_step']:.1f}) "
                f"| {r['decode_step_tok_s'] / base['decode_step_tok_s']:.2f}x "
                f"| {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.0f} / {r['itl_p99_ms']:.0f} "
                f"| {r['follow_up_ttft_p50_ms']:.0f} | {r['follow_ups_from_cache']}/{r['follow_ups']} "
                f"| {r['decode_tok_s_p50']:.0f} |"
            )
    lf, steps = results["long_follow_up"], results["steps"]
    one = steps["decode_ms"]["1"]
    lines += [
        "",
        "One decode step with every row at 300 positions, ms (tokens/s against one row): "
        + ", ".join(f"{n} rows {ms:.1f} ({int(n) * one / ms:.2f}x)" for n, ms in steps["decode_ms"].items())
        + ". One prompt chunk: "
        + ", ".join(f"{c} tokens {ms:.0f} ms" for c, ms in steps["chunk_ms"].items())
        + ".",
        "",
        f"Follow-up in a {lf['history_tokens']}-token conversation: time to first token "
        f"{lf['warm_ttft_ms']:.0f} ms with its cache resident vs {lf['cold_ttft_ms']:.0f} ms prefilling the "
        f"history again (**{lf['ratio']:.2f}x**). Resident cache: {results['bytes_per_cached_token'] / 1024:.0f} KiB "
        "per cached token.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--reply", type=int, default=64)
    parser.add_argument("--gap", type=float, default=0.1, help="mean seconds between conversations' arrivals")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--context", type=int, default=2048, help="positions per cache row (PARLEY_CONTEXT_TOKENS)")
    parser.add_argument("--chunk", type=int, default=64, help="prompt tokens read per step while others decode")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", default=BUILTIN_NAME, help="an imported model's name (default: the built-in one)")
    parser.add_argument("--quick", action="store_true", help="1 and 4 conversations only")
    parser.add_argument("--out", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency = [1, 4]
    started = time.perf_counter()
    results = asyncio.run(measure(args))
    results["duration_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    merged_path = args.out / "results.json"
    merged = json.loads(merged_path.read_text()) if merged_path.exists() else {}
    merged["load"] = results
    merged_path.write_text(json.dumps(merged, indent=2) + "\n")
    md_path = args.out / "results.md"
    markdown = md_path.read_text() if md_path.exists() else ""
    if BEGIN in markdown:
        markdown = markdown[: markdown.index(BEGIN)] + markdown[markdown.index(END) + len(END) + 1 :]
    md_path.write_text(markdown.rstrip("\n") + "\n\n" + render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
