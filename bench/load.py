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

With ``--vs-llama-server``, instead: Parley's OpenAI-compatible API (`parley serve`) against llama.cpp's
own ``llama-server`` (bench/llama_server.py: ``--rows`` slots, continuous batching, prompt cache) on the
model's GGUF, both driven over HTTP by the same streaming client with the same prompts, arrivals and
thread count. Results go into bench/results.json (key "vs_llama_server") and a section of results.md.

    python -m bench.load [--concurrency 1 4 16 32] [--turns 2] [--reply 32] [--rows 16] [--quick]
    python -m bench.load --vs-llama-server [--model qwen2.5-coder-1.5b] [--concurrency 1 4 16 32] [--threads 2]

With ``--thread-settings``: Parley's API alone, the same HTTP load, under each ONNX Runtime thread setting
(all cores or one fewer, idle threads spinning or sleeping: ``PARLEY_THREADS``, ``PARLEY_THREAD_SPINNING``),
with the server's own CPU time. Results under the key "thread_settings".

    python -m bench.load --thread-settings [--model NAME] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench import llama_server
from bench.llama_server import free_port, serve_process
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
VS_BEGIN, VS_END = "<!-- load-vs-llama-server:begin -->", "<!-- load-vs-llama-server:end -->"
THREADS_BEGIN, THREADS_END = "<!-- load-threads:begin -->", "<!-- load-threads:end -->"
BOT_TOKENS = ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN")


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
    reused: bool | None  # whether its prompt started from a cache (None: the server does not say)
    prompt_tokens: int = 0


@dataclass
class Run:
    turns: list[Turn] = field(default_factory=list)
    wall: float = 0.0
    model_time: dict[str, float] = field(default_factory=dict)  # the generator's ModelTime over the run


class Clock:
    """Client-side times of one reply: to its first text, and between consecutive pieces of text."""

    def __init__(self) -> None:
        self.start = self.first = self.last = time.perf_counter()
        self.ttft = 0.0
        self.gaps: list[float] = []

    def text(self) -> None:
        now = time.perf_counter()
        if not self.ttft:
            self.ttft, self.first = now - self.start, now
        else:
            self.gaps.append(now - self.last)
        self.last = now


# One reply to a conversation so far (its messages, whether this is a follow-up): the reply's text and times.
Ask = Callable[[list[dict[str, str]], bool], Awaitable[tuple[str, Turn]]]


def encode(model: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
    text = model.template.render(messages)
    return list(model.tokenizer.encode(text, add_special_tokens=False).ids)


def generator_ask(gen: Generator, model: LoadedModel, key: str, reply: int) -> Ask:
    """Replies from the generator in this process, the conversation's cache kept under ``key``."""

    async def ask(messages: list[dict[str, str]], follow_up: bool) -> tuple[str, Turn]:
        reused_before = gen.reused_tokens
        clock, turn, answer = Clock(), None, ""
        async for event in gen.stream(encode(model, messages), SamplingParams(max_tokens=reply), cache_key=key):
            if isinstance(event, Delta):
                clock.text()
            elif isinstance(event, Finished):
                answer = event.text
                reused = gen.reused_tokens > reused_before
                turn = Turn(clock.ttft, clock.gaps, event.completion_tokens, event.tokens_per_second, follow_up,
                            reused, event.prompt_tokens)  # fmt: skip
        assert turn is not None
        return answer, turn

    return ask


async def conversation(ask: Ask, first: str, turns: int, rng: random.Random, run: Run) -> None:
    messages: list[dict[str, str]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": first if turn == 0 else rng.choice(FOLLOW_UPS)})
        answer, record = await ask(messages, turn > 0)
        run.turns.append(record)
        messages.append({"role": "assistant", "content": answer})
        await asyncio.sleep(rng.expovariate(1 / 0.05))  # the person reads, then types the next question


async def arrivals(concurrency: int, gap: float, seed: int, talk: Callable[[int, str], Awaitable[None]]) -> float:
    """Conversation ``i`` starts with its first question at its Poisson arrival; the run's wall time."""
    rng = random.Random(seed)
    firsts = [
        _long_question(rng, rng.choice([40, 80, 120])) if rng.random() < 0.3 else rng.choice(SHORT)
        for _ in range(concurrency)
    ]
    start = time.perf_counter()

    async def arrive(i: int, delay: float) -> None:
        await asyncio.sleep(delay)
        await talk(i, firsts[i])

    delays, t = [], 0.0
    for _ in range(concurrency):
        delays.append(t)
        t += rng.expovariate(1 / gap)
    await asyncio.gather(*(arrive(i, d) for i, d in enumerate(delays)))
    return time.perf_counter() - start


async def sweep_point(
    gen: Generator, model: LoadedModel, concurrency: int, turns: int, reply: int, gap: float, seed: int
) -> Run:
    run = Run()
    before = dataclasses.asdict(gen.time)

    async def talk(i: int, first: str) -> None:
        ask = generator_ask(gen, model, f"c{seed}-{i}", reply)
        await conversation(ask, first, turns, random.Random(seed + i), run)

    run.wall = await arrivals(concurrency, gap, seed, talk)
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
    follow = [t for t in run.turns if t.follow_up]
    tokens = sum(t.tokens for t in run.turns)
    summary = {
        "requests": len(run.turns),
        "reply_tokens": tokens,
        "prompt_tokens": sum(t.prompt_tokens for t in run.turns),
        "wall_s": run.wall,
        "tokens_per_s": tokens / run.wall,
        "ttft_p50_ms": 1000 * (_pct(ttfts, 0.5) or 0),
        "ttft_p99_ms": 1000 * (_pct(ttfts, 0.99) or 0),
        "itl_p50_ms": 1000 * (_pct(gaps, 0.5) or 0),
        "itl_p99_ms": 1000 * (_pct(gaps, 0.99) or 0),
        "follow_up_ttft_p50_ms": 1000 * (_pct([t.ttft for t in follow], 0.5) or 0),
        "decode_tok_s_p50": _pct([t.decode_tok_s for t in run.turns if t.tokens > 1], 0.5) or 0,
        "follow_ups_from_cache": None if any(t.reused is None for t in follow) else sum(bool(t.reused) for t in follow),
        "follow_ups": len(follow),
    }
    mt = run.model_time
    if mt:  # measured in this process: the generator's own times
        summary |= {
            # Decode steps alone (prompt reading left out): what batching itself buys.
            "decode_step_tok_s": mt["decode_tokens"] / mt["decode_seconds"] if mt["decode_seconds"] else 0,
            "rows_per_decode_step": mt["decode_tokens"] / mt["decode_steps"] if mt["decode_steps"] else 0,
            "prefill_share": mt["prefill_seconds"] / run.wall,
            "decode_share": mt["decode_seconds"] / run.wall,
        }
    return summary


async def long_follow_up(model: LoadedModel, device: str, threads: int, reply: int, repeats: int) -> dict[str, Any]:
    """A follow-up in a ~1500-token conversation: cache resident vs the history prefilled again."""
    rng = random.Random(7)
    question = _long_question(rng, 230)
    runner = OnnxRunner(model, device=device, threads=threads, max_len=2048, rows=2)
    warm: list[float] = []
    cold: list[float] = []
    history = 0
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


# Parley and llama.cpp's llama-server over HTTP: the same client, prompts and arrivals for both.


def http_ask(session: aiohttp.ClientSession, api: str, model: str, system: str, reply: int) -> Ask:
    """Replies streamed from an OpenAI-compatible ``/chat/completions`` (server-sent events), greedy.
    Every request carries the whole history after the same system message, so both servers render the
    same prompt (Parley would otherwise add its own, llama.cpp the chat template's)."""

    async def ask(messages: list[dict[str, str]], follow_up: bool) -> tuple[str, Turn]:
        body = {
            "model": model,
            "messages": [{"role": "system", "content": system}, *messages],
            "max_tokens": reply,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        clock, pieces = Clock(), []
        usage: dict[str, Any] = {}
        async with session.post(f"{api}/chat/completions", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{api}: {resp.status} {await resp.text()}")
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[len(b"data: ") :])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    if text := (choice.get("delta") or {}).get("content"):  # the opening role chunk has none
                        clock.text()
                        pieces.append(text)
        tokens = usage.get("completion_tokens", len(pieces))
        decode = clock.last - clock.first
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")  # llama-server says, Parley not
        turn = Turn(clock.ttft, clock.gaps, tokens, (tokens - 1) / decode if decode > 0 else 0.0, follow_up,
                    None if cached is None else cached > 0, usage.get("prompt_tokens", 0))  # fmt: skip
        return "".join(pieces), turn

    return ask


async def http_sweep_point(
    api: str, system: str, concurrency: int, turns: int, reply: int, gap: float, seed: int
) -> Run:
    run = Run()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=900)  # a request may wait its turn for a while
    # A new connection per request: llama-server drops an idle keep-alive connection after a few seconds,
    # and a request written to one it is just closing fails ("Cannot write to closing transport").
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async with session.get(f"{api}/models") as resp:
            model = (await resp.json())["data"][0]["id"]  # Parley refuses any other model name

        async def talk(i: int, first: str) -> None:
            ask = http_ask(session, api, model, system, reply)
            await conversation(ask, first, turns, random.Random(seed + i), run)

        run.wall = await arrivals(concurrency, gap, seed, talk)
    return run


@asynccontextmanager
async def parley_server(
    args: argparse.Namespace, threads: int, workdir: Path, spinning: bool = True
) -> AsyncIterator[tuple[str, Process]]:
    """`parley serve` with only its API, on a free port, with an embedded Redis of its own in ``workdir``;
    yields (base URL, process). Run from ``workdir`` so that no .env of the checkout configures it."""
    settings = load_settings()
    port = free_port()
    # Another Redis or a bot's token in this environment would bring in more than the API.
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PARLEY_REDIS_URL", *BOT_TOKENS)}
    env |= {
        "PARLEY_MODEL": args.model,
        "PARLEY_MODEL_DIR": str(settings.models_path),
        "PARLEY_DATA_DIR": str(workdir / "data"),
        "PARLEY_ENGINE": "local",
        "PARLEY_DEVICE": args.device,
        "PARLEY_THREADS": str(threads),
        "PARLEY_THREAD_SPINNING": str(spinning).lower(),
        "PARLEY_CONTEXT_TOKENS": str(args.context),
        "PARLEY_MAX_BATCH": str(args.rows),
        "PARLEY_MAX_WAITING": "1024",
        "PARLEY_PREFILL_CHUNK": str(args.chunk),
        # Plain greedy, as llama-server's temperature 0: no repetition penalty from the model's defaults.
        "PARLEY_TEMPERATURE": "0",
        "PARLEY_REPETITION_PENALTY": "1",
        "PARLEY_API_HOST": "127.0.0.1",
        "PARLEY_API_PORT": str(port),
        "PARLEY_API_KEYS": "",
        "PARLEY_API_REQUESTS_PER_MINUTE": "0",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "bots.cli", "serve"]
    base = f"http://127.0.0.1:{port}"
    async with serve_process(cmd, f"{base}/readyz", env=env, cwd=workdir, log=workdir / "parley.log") as proc:
        yield base, proc


async def measure_vs_llama_server(args: argparse.Namespace, binary: Path, gguf: Path) -> dict[str, Any]:
    """Each level with fresh servers (no cache carried over from the level before; the peak memory is
    this level's), Parley first, each warmed up by one short conversation."""
    threads = args.threads or os.cpu_count() or 1
    system = load_settings().system_prompt
    servers: dict[str, Callable[[Path], AbstractAsyncContextManager[tuple[str, Process]]]] = {
        "parley": lambda workdir: parley_server(args, threads, workdir),
        "llama-server": lambda workdir: llama_server.serve(
            gguf,
            threads=threads,
            ctx=args.context,
            parallel=args.rows,
            binary=binary,
            log=workdir / "llama.log",
            extra=shlex.split(args.llama_server_args),
        ),
    }
    results: dict[str, Any] = {
        "sweep": {},
        "llama_server": {"version": llama_server.server_version(binary), "binary": str(binary)},
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "llama_server")}
        | {"threads": threads, "gguf": gguf.name, "system_prompt": system},
    }
    for c in args.concurrency:
        for name, start in servers.items():
            print(f"[load] {name}: {c} conversations", flush=True)
            with tempfile.TemporaryDirectory(prefix="parley-vs-llama-") as tmp:
                async with start(Path(tmp)) as (base, proc):
                    await http_sweep_point(f"{base}/v1", system, 1, 1, 4, 0.01, seed=0)  # warm-up
                    run = await http_sweep_point(f"{base}/v1", system, c, args.turns, args.reply, args.gap, seed=c)
                    rss = llama_server.peak_rss_bytes(proc.pid)  # before it stops: VmHWM goes with the process
            results["sweep"].setdefault(str(c), {})[name] = summarise(run) | {"peak_rss_mib": rss / (1 << 20)}
    return results


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def measure_thread_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Parley alone under each thread setting, fresh server each, in the same order at every level."""
    cores = os.cpu_count() or 1
    settings = [(t, spin) for t in sorted({cores, max(1, cores - 1)}, reverse=True) for spin in (True, False)]
    system = load_settings().system_prompt
    results: dict[str, Any] = {
        "sweep": {},
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "llama_server")} | {"cores": cores},
    }
    for c in args.concurrency:
        for threads, spinning in settings:
            label = f"{threads} thread{'s' * (threads > 1)}, spinning {'on' if spinning else 'off'}"
            print(f"[load] parley, {label}: {c} conversations", flush=True)
            with tempfile.TemporaryDirectory(prefix="parley-threads-") as tmp:
                async with parley_server(args, threads, Path(tmp), spinning) as (base, proc):
                    await http_sweep_point(f"{base}/v1", system, 1, 1, 4, 0.01, seed=0)  # warm-up
                    cpu = cpu_seconds(proc.pid)
                    run = await http_sweep_point(f"{base}/v1", system, c, args.turns, args.reply, args.gap, seed=c)
                    cpu = cpu_seconds(proc.pid) - cpu
            row = summarise(run) | {"threads": threads, "spinning": spinning, "server_cpu_s": cpu}
            results["sweep"].setdefault(str(c), {})[label] = row
    return results


def render_threads(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [
        THREADS_BEGIN,
        "## Thread settings under load (`python -m bench.load --thread-settings`)",
        "",
        f"Parley's API alone ({cfg['model']}, {cfg['rows']} rows), the same HTTP load as against llama-server, "
        f"on {cfg['cores']} cores shared with the server's event loop and its embedded Redis; a fresh server per "
        "setting. CPU: the server process's own user + system seconds over the run.",
        "",
        "| conversations | setting | tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | server CPU s "
        "| CPU s per 100 tokens |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c, rows in results["sweep"].items():
        for label, r in rows.items():
            lines.append(
                f"| {c} | {label} | {r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} "
                f"| {r['itl_p50_ms']:.0f} / {r['itl_p99_ms']:.0f} | {r['server_cpu_s']:.0f} "
                f"| {100 * r['server_cpu_s'] / max(r['reply_tokens'], 1):.1f} |"
            )
    return "\n".join([*lines, THREADS_END]) + "\n"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def render_vs(by_model: dict[str, dict[str, Any]]) -> str:
    """The section of results.md: one part per model measured (each run keeps the other models')."""
    lines = [VS_BEGIN, "## Parley vs llama.cpp's llama-server (`python -m bench.load --vs-llama-server`)"]
    for results in by_model.values():
        lines += _render_vs_model(results)
    return "\n".join([*lines, VS_END]) + "\n"


def _render_vs_model(results: dict[str, Any]) -> list[str]:
    cfg, ls = results["config"], results["llama_server"]
    more = f" (and `{cfg['llama_server_args']}`)" if cfg.get("llama_server_args") else ""
    lines = [
        "",
        f"### {cfg['model']}",
        "",
        f"Both servers driven over HTTP by one client through their OpenAI-compatible streaming "
        f"`/v1/chat/completions`: greedy, {cfg['turns']} turns per conversation (follow-ups carry the history), "
        f"replies up to {cfg['reply']} tokens, Poisson arrivals (mean gap {cfg['gap']} s), the same system "
        f"message. Parley: `parley serve` with {cfg['model']}, {cfg['rows']} cache rows of {cfg['context']} "
        f"positions. llama-server {ls['version']}: {cfg['gguf']}, `-np {cfg['rows']}` slots of {cfg['context']} "
        f"positions, continuous batching, prompt cache{more}. {cfg['threads']} threads each; fresh servers per level. "
        "tok/s: all reply tokens over the run's wall time; TTFT and ITL on the client (ITL: between pieces of "
        "text as they arrive). Follow-ups from cache: as the server reports it (`usage.prompt_tokens_details`).",
        "",
        "| conversations | server | tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | follow-up TTFT p50 ms "
        "| follow-ups from cache | prompt tokens | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, servers in results["sweep"].items():
        for name, r in servers.items():
            cached = "-" if r["follow_ups_from_cache"] is None else f"{r['follow_ups_from_cache']}/{r['follow_ups']}"
            lines.append(
                f"| {c} | {name} | {r['tokens_per_s']:.0f} | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} "
                f"| {r['itl_p50_ms']:.0f} / {r['itl_p99_ms']:.0f} | {r['follow_up_ttft_p50_ms']:.0f} | {cached} "
                f"| {r['prompt_tokens']} | {r['peak_rss_mib']:.0f} |"
            )
    lines += [
        "",
        "Parley / llama-server (tok/s: higher is better for Parley; the others: lower is):",
        "",
        "| conversations | tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | follow-up TTFT p50 | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "follow_up_ttft_p50_ms",
            "peak_rss_mib")  # fmt: skip
    for c, servers in results["sweep"].items():
        p, ll = servers["parley"], servers["llama-server"]
        lines.append(f"| {c} | " + " | ".join(_ratio(p[k], ll[k]) for k in keys) + " |")
    return lines


def saved(out: Path) -> dict[str, Any]:
    path = out / "results.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def save(out: Path, key: str, results: dict[str, Any], section: str, begin: str, end: str) -> None:
    """``results`` under ``key`` of results.json and ``section`` (between its markers) in results.md,
    everything else in them kept."""
    out.mkdir(parents=True, exist_ok=True)
    merged_path = out / "results.json"
    merged = saved(out)
    merged[key] = results
    merged_path.write_text(json.dumps(merged, indent=2) + "\n")
    md_path = out / "results.md"
    markdown = md_path.read_text() if md_path.exists() else ""
    if begin in markdown:
        markdown = markdown[: markdown.index(begin)] + markdown[markdown.index(end) + len(end) + 1 :]
    md_path.write_text(markdown.rstrip("\n") + "\n\n" + section)


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
    parser.add_argument(
        "--vs-llama-server",
        action="store_true",
        help="instead: Parley's API against llama.cpp's llama-server over HTTP (builds llama-server on first use)",
    )
    parser.add_argument("--gguf", help="llama-server's GGUF: a built-in model's name or a path (default: --model's)")
    parser.add_argument("--llama-server", type=Path, help="a llama-server binary to use instead of building one")
    parser.add_argument(
        "--llama-server-args", default="", help="more llama-server arguments, e.g. --llama-server-args='-kvu'"
    )
    parser.add_argument(
        "--thread-settings",
        action="store_true",
        help="instead: Parley's API alone under each thread count and spinning setting",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency = [1, 4]
    started = time.perf_counter()
    if args.thread_settings:
        resolve_model(args.model, load_settings().models_path, device=args.device)  # imported before it is timed
        results = asyncio.run(measure_thread_settings(args))
        results["duration_s"] = time.perf_counter() - started
        save(args.out, "thread_settings", results, render_threads(results), THREADS_BEGIN, THREADS_END)
        print(render_threads(results))
        return 0
    if args.vs_llama_server:
        # Built (or found in the cache) before anything is timed: the first build takes minutes.
        binary = args.llama_server or llama_server.ensure_built()
        gguf = llama_server.find_gguf(args.gguf or args.model)
        resolve_model(args.model, load_settings().models_path, device=args.device)  # imported before it is timed
        results = asyncio.run(measure_vs_llama_server(args, binary, gguf))
        results["duration_s"] = time.perf_counter() - started
        by_model = saved(args.out).get("vs_llama_server", {}) | {args.model: results}  # other models' kept
        save(args.out, "vs_llama_server", by_model, render_vs(by_model), VS_BEGIN, VS_END)
        print(render_vs({args.model: results}))
        return 0
    results = asyncio.run(measure(args))
    results["duration_s"] = time.perf_counter() - started
    save(args.out, "load", results, render(results), BEGIN, END)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
