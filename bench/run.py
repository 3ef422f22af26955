"""`make bench`: Parley's ONNX engine, llama.cpp and transformers side by side on the same weights.

All three run the same GGUF (SmolLM2-135M-Instruct Q4_1 unless ``--gguf`` names another; Parley and
transformers on its dequantised weights), on the same token ids, greedily, with ``os.cpu_count()`` threads.
Each engine is driven by the same hand-written greedy loop (feed tokens, argmax the last logits), so they
all do exactly the same work:

* TTFT: reset, prefill the prompt, argmax -> first token; a short (~45-token) and a long (~800-token) prompt.
* decode: tokens/s over 128 more single-token steps after the short prompt, EOS ignored (same work for all).
* fidelity against transformers (the reference): the reference greedily answers each fidelity prompt
  (64 tokens, or up to its EOS); each engine then sees prompt + that reply in one teacher-forced pass, and
  "top-1 agreement" is the share of reply positions where its argmax is the reference's token.
  "identical 32" counts the prompts where the engine's own first 32 greedy tokens equal the reference's.

The machine has few cores and may be shared, so every repeat runs the engines one after the other (in a
rotating order) and the report gives medians. Writes bench/results.json and bench/results.md.

``--fidelity-only`` skips the timings and scores the larger fidelity set (60 prompts, ~3,800 positions)
instead, with each Parley engine's difference in top-1 agreement to llama.cpp and its 95% confidence
interval (a paired bootstrap over prompts: positions within one reply are not independent). This is what
decides a default precision: one that is not measurably less faithful than llama.cpp. Writes
``results[-<name>]-fidelity.json`` and ``.md``.

    python -m bench.run [--models NAME[,NAME]] [--quick] [--skip-llama] [--skip-torch] [--fidelity-only]
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.metadata
import inspect
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# Before transformers is imported: it draws a progress bar per tensor when loading a GGUF.
os.environ.setdefault("TQDM_DISABLE", "1")

from bench.prompts import FIDELITY, FIDELITY_LARGE, LONG, SHORT, Messages
from engine.errors import ModelError
from engine.model.catalog import BUILTIN_NAME
from engine.model.registry import LoadedModel, ModelInfo, load_model, read_model_info

BENCH_DIR = Path(__file__).resolve().parent
MAX_LEN = 2048  # the context every engine is given (Parley's KV cache, llama.cpp's n_ctx)
LLAMA_BATCH = 512
DECODE_TOKENS = 128
REPLY_TOKENS = 64  # reference reply length for top-1 agreement
IDENTICAL_TOKENS = 32
BOOTSTRAP_RESAMPLES = 10_000
# Thread pools (ORT, OpenMP, ggml) spin for a while after their last job; on a 2-core machine that
# would slow the next engine down, so each engine gets a short quiet gap before it is timed.
QUIET_S = 0.5
# Parley decode >= this x llama.cpp: 1.5 for the bundled SmolLM2 (issue 9), 1.0 for the others (issue 15)
TARGET_DECODE = {BUILTIN_NAME: 1.5}
TARGET_DECODE_OTHERS = 1.0
TARGET_TTFT_LONG = 0.5  # Parley long-prompt TTFT <= 0.5x llama.cpp

Ids = list[int]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Engine(Protocol):
    """One sequence at a time; argmax is part of every step, so TTFT includes choosing the token."""

    label: str
    kind: str

    def prefill(self, ids: Ids) -> int:
        """Start a new sequence with ``ids``; the greedy next token."""
        ...

    def step(self, token: int) -> int:
        """Append ``token``; the greedy next token."""
        ...

    def teacher_forced_argmax(self, ids: Ids) -> npt.NDArray[np.int64]:
        """A new sequence fed in one pass; the argmax at every position."""
        ...

    def close(self) -> None: ...


class ParleyEngine:
    kind = "parley"

    def __init__(self, info: ModelInfo, threads: int) -> None:
        from engine.model.runner import OnnxRunner

        self.model = load_model(info.path)
        self.runner = OnnxRunner(self.model, device="cpu", threads=threads, max_len=MAX_LEN)
        self.label = f"Parley {info.name} ({info.precision})"
        self.info = info

    def prefill(self, ids: Ids) -> int:
        self.runner.reset()
        return int(np.argmax(self.runner.prefill(ids)))

    def step(self, token: int) -> int:
        return int(np.argmax(self.runner.forward(np.array([token], dtype=np.int64))))

    def teacher_forced_argmax(self, ids: Ids) -> npt.NDArray[np.int64]:
        return np.asarray(self.runner.teacher_forced_logits(ids).argmax(axis=-1), dtype=np.int64)

    def close(self) -> None:
        del self.runner


class LlamaEngine:
    """llama-cpp-python, imported lazily: it is the optional ``bench`` extra."""

    kind = "llama.cpp"

    def __init__(self, gguf: Path, threads: int, *, logits_all: bool) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=MAX_LEN,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=LLAMA_BATCH,
            logits_all=logits_all,  # only for teacher forcing: computing every row slows the prefill
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        self.label = f"llama.cpp {llama_cpp.__version__} ({gguf.name.rsplit('.', 2)[-2]})"

    def _last(self) -> int:
        # Without logits_all, eval() no longer copies logits into self.scores (sampling moved into the C
        # sampler): read the last row straight from the context.
        row = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(self.n_vocab,))))

    def prefill(self, ids: Ids) -> int:
        self.llm.reset()  # type: ignore[no-untyped-call]  # n_tokens = 0: eval() then drops stale KV cells
        self.llm.eval(ids)
        return self._last()

    def step(self, token: int) -> int:
        self.llm.eval([token])
        return self._last()

    def teacher_forced_argmax(self, ids: Ids) -> npt.NDArray[np.int64]:
        self.llm.reset()  # type: ignore[no-untyped-call]
        self.llm.eval(ids)
        return np.asarray(self.llm.scores[: len(ids)].argmax(axis=-1), dtype=np.int64)

    def tokenize(self, text: str) -> Ids:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def close(self) -> None:
        self.llm.close()


class TorchEngine:
    kind = "transformers"

    def __init__(self, gguf: Path, threads: int) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        ).eval()  # type: ignore[no-untyped-call]
        self.past: Any = None
        # transformers 5.x renamed past_key_values to cache (the old name warns); take whichever this one has.
        params = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.label = f"transformers {transformers.__version__} + torch {torch.__version__} (fp32, reference)"

    def _run(self, ids: Ids, past: Any) -> int:
        with self.torch.inference_mode():
            # logits_to_keep=1: like generate(), only the last position goes through the LM head.
            out = self.model(
                input_ids=self.torch.tensor([ids]), use_cache=True, logits_to_keep=1, **{self.cache_arg: past}
            )
        self.past = out[self.cache_arg]
        return int(out.logits[0, -1].argmax())

    def prefill(self, ids: Ids) -> int:
        return self._run(ids, None)

    def step(self, token: int) -> int:
        return self._run([token], self.past)

    def teacher_forced_argmax(self, ids: Ids) -> npt.NDArray[np.int64]:
        with self.torch.inference_mode():
            logits = self.model(input_ids=self.torch.tensor([ids]), use_cache=False).logits[0]
        return np.asarray(logits.argmax(dim=-1).numpy(), dtype=np.int64)

    def close(self) -> None:
        del self.model, self.past


def greedy(engine: Engine, ids: Ids, n: int, eos: frozenset[int]) -> Ids:
    """Up to ``n`` greedy tokens, stopping after an EOS (which is kept)."""
    out = [engine.prefill(ids)]
    while len(out) < n and out[-1] not in eos:
        out.append(engine.step(out[-1]))
    return out


@dataclass
class Timings:
    ttft_short_ms: list[float] = field(default_factory=list)
    ttft_long_ms: list[float] = field(default_factory=list)
    decode_tok_s: list[float] = field(default_factory=list)


def time_once(engine: Engine, short: Ids, long: Ids, timings: Timings) -> None:
    gc.collect()
    time.sleep(QUIET_S)
    t0 = time.perf_counter()
    token = engine.prefill(short)
    timings.ttft_short_ms.append((time.perf_counter() - t0) * 1e3)
    # EOS is ignored: every engine takes exactly DECODE_TOKENS steps, whatever it generates.
    t0 = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        token = engine.step(token)
    timings.decode_tok_s.append(DECODE_TOKENS / (time.perf_counter() - t0))
    time.sleep(QUIET_S)
    t0 = time.perf_counter()
    engine.prefill(long)
    timings.ttft_long_ms.append((time.perf_counter() - t0) * 1e3)


def warm_up(engine: Engine, short: Ids, long: Ids) -> None:
    # First runs allocate buffers, pick kernels and fault the weights in; none of that is measured.
    token = engine.prefill(short)
    for _ in range(16):
        token = engine.step(token)
    engine.prefill(long)


@dataclass
class Fidelity:
    agree: int = 0
    positions: int = 0
    identical: int = 0
    prompts: int = 0
    per_prompt: list[int] = field(default_factory=list)  # agreeing positions, prompt by prompt

    @property
    def agreement_pct(self) -> float:
        return 100.0 * self.agree / self.positions if self.positions else float("nan")


def agreement_difference(
    engine: Sequence[int], other: Sequence[int], positions: Sequence[int], seed: int = 0
) -> tuple[float, float, float]:
    """``engine``'s top-1 agreement minus ``other``'s, in points, with a 95% confidence interval from a
    paired bootstrap over prompts (both scored on the same replies; a reply's positions are correlated, so
    prompts, not positions, are the independent draws)."""
    a, b, n = (np.asarray(x, dtype=np.float64) for x in (engine, other, positions))
    picks = np.random.default_rng(seed).integers(0, len(n), size=(BOOTSTRAP_RESAMPLES, len(n)))
    diffs = 100.0 * (a[picks].sum(axis=1) - b[picks].sum(axis=1)) / n[picks].sum(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return 100.0 * float(a.sum() - b.sum()) / float(n.sum()), float(low), float(high)


def measure_fidelity(engine: Engine, prompts: Sequence[Ids], replies: Sequence[Ids], eos: frozenset[int]) -> Fidelity:
    fid = Fidelity()
    for ids, reply in zip(prompts, replies, strict=True):
        # Position len(ids) - 1 + i predicts reply[i].
        preds = engine.teacher_forced_argmax(ids + reply)[len(ids) - 1 : len(ids) - 1 + len(reply)]
        fid.per_prompt.append(int(np.count_nonzero(preds == np.asarray(reply))))
        fid.agree += fid.per_prompt[-1]
        fid.positions += len(reply)
        fid.identical += greedy(engine, ids, IDENTICAL_TOKENS, eos) == reply[:IDENTICAL_TOKENS]
        fid.prompts += 1
    return fid


def resolve_models(names: Sequence[str], models_dir: Path) -> list[ModelInfo]:
    """Folder names / paths as `parley` resolves them; a precision name means the built-in model imported
    at that precision (the default folder when it already holds it, else ``smollm2-135m-<precision>``)."""
    from engine.model.catalog import BUILTIN_SOURCE, resolve_model
    from engine.model.convert.importer import PRECISIONS, import_model

    found: dict[Path, ModelInfo] = {}
    for name in names:
        if name in PRECISIONS:
            try:
                existing: ModelInfo | None = read_model_info(models_dir / BUILTIN_NAME)
            except ModelError:
                existing = None
            if existing is not None and existing.precision == name:
                info = existing
            else:
                folder = BUILTIN_NAME if existing is None else f"{BUILTIN_NAME}-{name}"
                info = import_model(BUILTIN_SOURCE, models_dir, name=folder, precision=name)
        else:
            info = resolve_model(name, models_dir)
        found.setdefault(info.path.resolve(), info)
    return list(found.values())


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("onnxruntime", "llama_cpp_python", "torch", "transformers", "numpy")},
    }


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None or value != value else f"{value:{spec}}{suffix}"  # NaN != NaN


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = m["versions"]
    cfg = results["config"]
    rows = [
        "| Engine | Prompt tokens (short / long) | TTFT short (ms) | TTFT long (ms) | Decode (tok/s) "
        "| Top-1 agreement | Identical 32 | Decode vs llama.cpp | Long TTFT vs llama.cpp | Target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in results["engines"]:
        target = e.get("meets_target")
        target_text = "-" if not target else ", ".join(f"{k} {'✓' if ok else '✗'}" for k, ok in target.items())
        rows.append(
            f"| {e['name']} | {e['prompt_tokens_short']} / {e['prompt_tokens_long']} "
            f"| {_fmt(e['ttft_short_ms'], '.1f')} | {_fmt(e['ttft_long_ms'], '.1f')} "
            f"| {_fmt(e['decode_tok_s'], '.1f')} | {_fmt(e['agreement_pct'], '.1f', '%')} "
            f"| {e['identical32'] or '-'} | {_fmt(e['decode_ratio_vs_llama'], '.2f', 'x')} "
            f"| {_fmt(e['ttft_long_ratio_vs_llama'], '.2f', 'x')} | {target_text} |"
        )
    lines = [
        "# Parley benchmark",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads; onnxruntime {v['onnxruntime']}, "
        f"llama-cpp-python {v['llama_cpp_python']}, torch {v['torch']}, transformers {v['transformers']}. "
        f"{results['date']}, {results['duration_s']:.0f} s{' (quick run)' if cfg['quick'] else ''}; "
        "1-min load average before / after: {:.1f} / {:.1f}.".format(*m["loadavg_1m_before_after"]),
        "",
        f"Model: {cfg['gguf']} (all engines; Parley and transformers on its dequantised weights). Greedy, batch 1, "
        f"medians of {cfg['repeats']} interleaved repeats. Decode: {DECODE_TOKENS} tokens after the short prompt. "
        f"Fidelity: {cfg['fidelity_prompts']} chat prompts, reference = transformers' greedy reply "
        f"({REPLY_TOKENS} tokens or up to EOS), scored teacher-forced.",
        "",
        *rows,
        "",
        f"**Target:** Parley decode >= {cfg['decode_target']}x llama.cpp, "
        f"long-prompt TTFT <= {TARGET_TTFT_LONG}x llama.cpp, top-1 agreement >= llama.cpp's.",
        "",
    ]
    return "\n".join(lines)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        help="Parley model folder names (or paths), or precisions to import the built-in model at, comma-"
        "separated; default: the configured model plus the default precision and fp32",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and prompts (a smoke run)")
    parser.add_argument("--skip-llama", action="store_true", help="leave llama.cpp out")
    parser.add_argument(
        "--skip-torch", action="store_true", help="leave transformers out (and with it the fidelity columns)"
    )
    parser.add_argument(
        "--gguf",
        default=BUILTIN_NAME,
        help="the GGUF llama.cpp and transformers run: a built-in model's name or a .gguf path (default: "
        f"{BUILTIN_NAME}); results then go to results-<name>.json/.md",
    )
    parser.add_argument(
        "--fidelity-only",
        action="store_true",
        help="no timings: the larger fidelity set, with confidence intervals against llama.cpp",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.json / results.md go")
    args = parser.parse_args(argv)
    if args.fidelity_only and args.skip_torch:
        parser.error("--fidelity-only needs transformers (the reference)")

    from engine.model.catalog import DEFAULT_PRECISION, SOURCES_DIR, builtin_gguf, find_builtin
    from engine.runtime.settings import load_settings

    started = time.monotonic()
    # Other work on a 2-core machine skews every number: record the load around the run to judge that.
    load_before = os.getloadavg()
    threads = os.cpu_count() or 1
    settings = load_settings()
    builtin = find_builtin(args.gguf)
    gguf = builtin_gguf(builtin, settings.models_path / SOURCES_DIR) if builtin else Path(args.gguf)
    decode_target = TARGET_DECODE.get(args.gguf, TARGET_DECODE_OTHERS)
    stem = "results" if args.gguf == BUILTIN_NAME else f"results-{builtin.name if builtin else gguf.stem}"
    repeats = 2 if args.quick else 5
    if args.fidelity_only:
        stem += "-fidelity"
        fidelity_set = FIDELITY_LARGE[:8] if args.quick else FIDELITY_LARGE
    else:
        fidelity_set = [SHORT, LONG, *FIDELITY[2:4]] if args.quick else FIDELITY

    if args.models:
        names = args.models.split(",")
    elif args.gguf == BUILTIN_NAME:  # the bundled model as built in, at the other GGUF precision, and fp32
        assert builtin is not None
        names = [BUILTIN_NAME, next(p for p in ("gguf", "gguf-exact") if p != builtin.precision), "fp32"]
    elif builtin is not None:
        names = [builtin.name]
    else:
        parser.error("--models must name the Parley models imported from that GGUF")
    infos = resolve_models([n.strip() for n in names if n.strip()], settings.models_path)
    if not infos:
        parser.error("--models named no model")

    # One tokenizer and chat template for all (the first Parley model's, as serving would use): every
    # engine is fed the very same ids.
    first: LoadedModel = load_model(infos[0].path)
    eos = first.config.eos_token_ids

    def encode(messages: Messages) -> Ids:
        text = first.template.render(messages, add_generation_prompt=True)
        return list(first.tokenizer.encode(text, add_special_tokens=False).ids)

    short, long = encode(SHORT), encode(LONG)
    fidelity_ids = [encode(m) for m in fidelity_set]
    log(f"prompts: short {len(short)} tokens, long {len(long)} tokens, {len(fidelity_ids)} fidelity prompts")

    factories: list[Callable[[], Engine]] = [functools.partial(ParleyEngine, info, threads) for info in infos]
    if not args.skip_llama:
        factories.append(lambda: LlamaEngine(gguf, threads, logits_all=False))
    if not args.skip_torch:
        factories.append(lambda: TorchEngine(gguf, threads))

    # Timing: every engine loaded at once (all together are ~1.5 GB) so the repeats can interleave them.
    engines: list[Engine] = []
    for make in factories:
        engine = make()
        if not args.fidelity_only:
            log(f"warming up {engine.label}")
            warm_up(engine, short, long)
        engines.append(engine)
    timings: dict[str, Timings] = {e.label: Timings() for e in engines}
    for r in range(0 if args.fidelity_only else repeats):
        for engine in engines[r % len(engines) :] + engines[: r % len(engines)]:  # rotate: no fixed slot
            time_once(engine, short, long, timings[engine.label])
        log(
            f"repeat {r + 1}/{repeats}: "
            + ", ".join(f"{e.label} {timings[e.label].decode_tok_s[-1]:.0f} tok/s" for e in engines)
        )

    tokenization: dict[str, Any] | None = None
    llama_tok = next((e for e in engines if isinstance(e, LlamaEngine)), None)
    if llama_tok is not None:
        # llama.cpp is given the same ids; record whether its own tokenizer would have produced them.
        same = sum(
            llama_tok.tokenize(first.template.render(m)) == ids
            for m, ids in zip(fidelity_set, fidelity_ids, strict=True)
        )
        tokenization = {"llama_cpp_matches": f"{same}/{len(fidelity_ids)}"}
        if same != len(fidelity_ids):
            log(f"warning: llama.cpp's tokenizer differs from Parley's on {len(fidelity_ids) - same} prompts")

    # Fidelity, one engine at a time, each freed as soon as it is done.
    fidelity: dict[str, Fidelity] = {}
    torch_engine = next((e for e in engines if isinstance(e, TorchEngine)), None)
    replies: list[Ids] = []
    if torch_engine is not None:
        log("fidelity: reference replies from transformers")
        replies = [greedy(torch_engine, ids, REPLY_TOKENS, eos) for ids in fidelity_ids]
    labels = {e.label: e.kind for e in engines}
    while engines:
        engine = engines.pop(0)
        # The reference scored against its own replies says only that teacher forcing matches its greedy
        # loop (the timing table shows it); the larger set leaves that out, it costs minutes on 1.5B.
        if replies and not (args.fidelity_only and engine is torch_engine):
            if isinstance(engine, LlamaEngine):
                engine.close()
                engine = LlamaEngine(gguf, threads, logits_all=True)
            log(f"fidelity: {engine.label}")
            fidelity[engine.label] = measure_fidelity(engine, fidelity_ids, replies, eos)
        engine.close()
        del engine
        gc.collect()

    if args.fidelity_only:
        part = fidelity_results(labels, fidelity, replies)
        part["config"].update(gguf=gguf.name, quick=args.quick, tokenization=tokenization)
    else:
        part = timing_results(labels, timings, fidelity, short, long, decode_target)
        part["config"].update(
            quick=args.quick,
            repeats=repeats,
            gguf=gguf.name,
            max_len=MAX_LEN,
            decode_tokens=DECODE_TOKENS,
            reply_tokens=REPLY_TOKENS,
            identical_tokens=IDENTICAL_TOKENS,
            fidelity_prompts=len(fidelity_ids),
            fidelity_prompt_tokens=[len(ids) for ids in fidelity_ids],
            reference_reply_tokens=[len(r) for r in replies],
            default_precision=DEFAULT_PRECISION,
            decode_target=decode_target,
            parley_models=[{"name": i.name, "path": str(i.path), "precision": i.precision} for i in infos],
            tokenization=tokenization,
        )
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "duration_s": time.monotonic() - started,
        "machine": {**machine_info(threads), "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]]},
        **part,
    }
    markdown = render_fidelity(results) if args.fidelity_only else render_markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    log(f"wrote {args.out / stem}.json and .md in {results['duration_s']:.0f} s")
    return 0


def fidelity_results(labels: dict[str, str], fidelity: dict[str, Fidelity], replies: Sequence[Ids]) -> dict[str, Any]:
    positions = [len(r) for r in replies]
    llama = next((fidelity[label] for label, kind in labels.items() if kind == LlamaEngine.kind), None)
    rows: list[dict[str, Any]] = []
    for label, kind in labels.items():
        if label not in fidelity:  # the reference itself
            continue
        fid = fidelity[label]
        row: dict[str, Any] = {
            "name": label,
            "engine": kind,
            "agreement_pct": fid.agreement_pct,
            "agreement_positions": f"{fid.agree}/{fid.positions}",
            "identical32": f"{fid.identical}/{fid.prompts}",
            "per_prompt": fid.per_prompt,
        }
        if llama is not None and kind == ParleyEngine.kind:
            diff, low, high = agreement_difference(fid.per_prompt, llama.per_prompt, positions)
            # "Not measurably less faithful": the interval does not lie wholly below zero.
            row["vs_llama_cpp"] = {"difference_pts": diff, "ci95": [low, high], "not_worse": high >= 0.0}
        rows.append(row)
    return {
        "config": {
            "fidelity_prompts": len(replies),
            "reply_tokens": REPLY_TOKENS,
            "identical_tokens": IDENTICAL_TOKENS,
            "scored_positions": sum(positions),
            "reference_reply_tokens": positions,
            "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        },
        "engines": rows,
    }


def render_fidelity(results: dict[str, Any]) -> str:
    m, cfg = results["machine"], results["config"]
    v = m["versions"]
    rows = [
        "| Engine | Top-1 agreement | Positions | Identical 32 | vs llama.cpp (points, 95% CI) | Not less faithful |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for e in results["engines"]:
        vs = e.get("vs_llama_cpp")
        vs_text = "-" if not vs else "{:+.2f} [{:+.2f}, {:+.2f}]".format(vs["difference_pts"], *vs["ci95"])
        verdict = "-" if not vs else ("✓" if vs["not_worse"] else "✗")
        rows.append(
            f"| {e['name']} | {e['agreement_pct']:.2f}% | {e['agreement_positions']} | {e['identical32']} "
            f"| {vs_text} | {verdict} |"
        )
    return "\n".join(
        [
            "# Parley benchmark: fidelity",
            "",
            f"{m['cpu']}, {m['cores']} cores; onnxruntime {v['onnxruntime']}, llama-cpp-python "
            f"{v['llama_cpp_python']}, torch {v['torch']}, transformers {v['transformers']}. {results['date']}, "
            f"{results['duration_s']:.0f} s{' (quick run)' if cfg['quick'] else ''}.",
            "",
            f"Model: {cfg['gguf']} (all engines; Parley and transformers on its dequantised weights). "
            f"{cfg['fidelity_prompts']} chat prompts (bench/prompts.py `FIDELITY_LARGE`); reference = "
            f"transformers' greedy reply ({cfg['reply_tokens']} tokens or up to EOS), {cfg['scored_positions']} "
            "positions scored teacher-forced. The interval is a paired bootstrap over prompts "
            f"({cfg['bootstrap_resamples']:,} resamples); an engine is not measurably less faithful than "
            "llama.cpp when its interval reaches zero or above.",
            "",
            *rows,
            "",
        ]
    )


def timing_results(
    labels: dict[str, str],
    timings: dict[str, Timings],
    fidelity: dict[str, Fidelity],
    short: Ids,
    long: Ids,
    decode_target: float,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for label, kind in labels.items():
        t = timings[label]
        fid = fidelity.get(label)
        rows.append(
            {
                "name": label,
                "engine": kind,
                "ttft_short_ms": _median(t.ttft_short_ms),
                "ttft_long_ms": _median(t.ttft_long_ms),
                "prompt_tokens_short": len(short),
                "prompt_tokens_long": len(long),
                "decode_tok_s": _median(t.decode_tok_s),
                "agreement_pct": fid.agreement_pct if fid else None,
                "agreement_positions": f"{fid.agree}/{fid.positions}" if fid else None,
                "identical32": f"{fid.identical}/{fid.prompts}" if fid else None,
                "samples": {
                    "ttft_short_ms": t.ttft_short_ms,
                    "ttft_long_ms": t.ttft_long_ms,
                    "decode_tok_s": t.decode_tok_s,
                },
            }
        )
    llama = next((row for row in rows if row["engine"] == LlamaEngine.kind), None)
    for row in rows:
        row["decode_ratio_vs_llama"] = row["decode_tok_s"] / llama["decode_tok_s"] if llama else None
        row["ttft_long_ratio_vs_llama"] = row["ttft_long_ms"] / llama["ttft_long_ms"] if llama else None
        if llama and row["engine"] == ParleyEngine.kind:
            row["meets_target"] = {
                "decode": row["decode_ratio_vs_llama"] >= decode_target,
                "long TTFT": row["ttft_long_ratio_vs_llama"] <= TARGET_TTFT_LONG,
                **(
                    {"agreement": row["agreement_pct"] >= llama["agreement_pct"]}
                    if row["agreement_pct"] is not None and llama["agreement_pct"] is not None
                    else {}
                ),
            }

    return {"config": {}, "engines": rows}


if __name__ == "__main__":
    raise SystemExit(main())
