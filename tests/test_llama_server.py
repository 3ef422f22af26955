"""The llama-server comparison's moving parts without building or running llama.cpp: its build flags, the
one HTTP client both servers are measured with (against a fake server speaking each one's dialect), the
server process lifecycle, and how results are saved."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bench import llama_server
from bench.load import cpu_seconds, http_sweep_point, save, summarise

SYSTEM = "Be brief."


def test_cmake_args_follow_the_makefile() -> None:
    avx2 = llama_server.cmake_args("flags : fpu sse avx avx2 fma f16c")
    avx512 = llama_server.cmake_args("flags : fpu avx2 avx512f avx512_vnni avx512_bf16")
    sapphire = llama_server.cmake_args("flags : fpu avx2 avx512f avx512_vnni avx512_bf16 avx_vnni")
    ice_lake = llama_server.cmake_args("flags : fpu avx2 avx512f avx512_vnni")
    for flag in ("-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DLLAMA_BUILD_SERVER=ON"):
        assert flag in avx2
        assert flag in avx512
    assert "-DGGML_AVX512=OFF" in avx2
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON"} <= set(avx512)
    # Only where the CPU lists them: an AVX-VNNI or BF16 instruction elsewhere is a SIGILL.
    assert "-DGGML_AVX_VNNI=ON" not in avx512
    assert "-DGGML_AVX_VNNI=ON" in sapphire
    assert "-DGGML_AVX512_BF16=ON" not in ice_lake
    # Another set of flags is another binary in the cache.
    assert llama_server.binary_path("0.3.1", avx2) != llama_server.binary_path("0.3.1", avx512)
    assert llama_server.binary_path("0.3.1", avx2) == llama_server.binary_path("0.3.1", list(avx2))


def _chunk(delta: dict[str, Any] | None, usage: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return f"data: {json.dumps({'choices': choices, 'usage': usage})}\n\n".encode()


@asynccontextmanager
async def fake_server(dialect: str) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A streaming chat endpoint answering "Hello there." in three pieces, its usage as llama-server
    reports it (with cached prompt tokens) or as Parley does (without); yields its API URL and the
    requests' bodies."""
    bodies: list[dict[str, Any]] = []

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        bodies.append(body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_chunk({"role": "assistant", "content": ""}))
        for piece in ("Hello", " there", "."):
            await resp.write(_chunk({"content": piece}))
        await resp.write(_chunk({}, finish="stop"))
        usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 3}
        if dialect == "llama-server":
            usage["prompt_tokens_details"] = {"cached_tokens": 8 if len(body["messages"]) > 2 else 0}
        await resp.write(_chunk(None, usage))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", bodies
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("dialect", "from_cache"), [("llama-server", 3), ("parley", None)])
async def test_the_client_measures_both_servers_alike(dialect: str, from_cache: int | None) -> None:
    async with fake_server(dialect) as (api, bodies):
        run = await http_sweep_point(api, SYSTEM, 3, 2, 16, 0.01, seed=4)
    assert len(run.turns) == len(bodies) == 6
    for turn in run.turns:
        assert turn.tokens == 3
        assert len(turn.gaps) == 2  # three pieces of text: the empty opening chunk is none
        assert turn.ttft > 0
    for body in bodies:
        assert (body["model"], body["temperature"], body["max_tokens"], body["stream"]) == ("m", 0, 16, True)
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    follow_ups = [b["messages"] for b in bodies if len(b["messages"]) > 2]
    assert len(follow_ups) == 3
    for messages in follow_ups:  # the history: question, the answer as streamed, the follow-up
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
        assert messages[2]["content"] == "Hello there."
    summary = summarise(run)
    assert (summary["reply_tokens"], summary["prompt_tokens"], summary["follow_ups"]) == (18, 60, 3)
    assert summary["follow_ups_from_cache"] == from_cache
    assert "decode_step_tok_s" not in summary  # no generator to ask over HTTP


async def test_a_server_process_is_started_measured_and_stopped(tmp_path: Path) -> None:
    port = llama_server.free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    async with llama_server.serve_process(cmd, f"http://127.0.0.1:{port}/", log=tmp_path / "log") as proc:
        assert llama_server.peak_rss_bytes(proc.pid) > 1 << 20
    assert proc.returncode is not None


async def test_a_server_that_exits_says_why(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match="no model here"):
        async with llama_server.serve_process(cmd, "http://127.0.0.1:9/", log=tmp_path / "log"):
            pass


def test_save_keeps_the_other_results(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"load": {"x": 1}}))
    (tmp_path / "results.md").write_text("# Results\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n\nkept\n")
    save(tmp_path, "vs", {"y": 2}, "<!-- a:begin -->\nnew\n<!-- a:end -->\n", "<!-- a:begin -->", "<!-- a:end -->")
    assert json.loads((tmp_path / "results.json").read_text()) == {"load": {"x": 1}, "vs": {"y": 2}}
    markdown = (tmp_path / "results.md").read_text()
    assert "old" not in markdown
    assert "kept" in markdown
    assert markdown.endswith("<!-- a:begin -->\nnew\n<!-- a:end -->\n")


def test_cpu_seconds_count_a_process_s_own_work() -> None:
    import os

    before = cpu_seconds(os.getpid())
    deadline = before + 0.05
    while cpu_seconds(os.getpid()) < deadline:  # busy: the count must rise
        sum(range(10_000))
    assert cpu_seconds(2**22 + 12345) == 0.0  # no such process
