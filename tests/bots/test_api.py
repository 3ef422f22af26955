"""The OpenAI-compatible API, driven by the official `openai` client over real HTTP."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from bots.api import run_api
from engine.contract import Delta, Finished
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.errors import ConfigError, ParleyError, StoreUnavailable
from engine.model.generator import Generator
from engine.model.registry import LoadedModel
from engine.model.runner import OnnxRunner
from engine.runtime.settings import Settings, load_settings
from tests.fakes.generator import ScriptedGenerator

KEY = "sk-test-0123456789abcdef"
PARIS = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]


def _settings(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"api_keys": KEY, "api_host": "127.0.0.1", **changes})


@pytest.fixture
async def api(engine: Engine, settings: Settings) -> AsyncIterator[str]:
    engine.settings = _settings(settings)
    async with run_api(engine, engine.settings) as url:
        yield url


@pytest.fixture
async def client(api: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=api, api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


async def test_models_lists_the_model(client: AsyncOpenAI, model: LoadedModel) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == [model.name]
    assert (await client.models.retrieve(model.name)).id == model.name
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-nope")


async def test_completion_answers_with_usage(client: AsyncOpenAI, model: LoadedModel) -> None:
    r = await client.chat.completions.create(model=model.name, messages=PARIS)  # type: ignore[arg-type]
    assert "Paris" in (r.choices[0].message.content or "")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens > 0 < r.usage.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


async def test_stream_matches_the_whole_reply(client: AsyncOpenAI, model: LoadedModel) -> None:
    whole = await client.chat.completions.create(model=model.name, messages=PARIS)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(
        model=model.name, messages=PARIS, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
    )  # fmt: skip
    text, finish, usage, chunks = "", None, None, 0
    async for chunk in stream:
        chunks += 1
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == whole.choices[0].message.content
    assert finish == "stop"
    assert chunks > 3
    assert usage is not None
    assert whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


async def test_history_is_used(client: AsyncOpenAI, model: LoadedModel) -> None:
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "Nice to meet you, Ann!"},
        {"role": "user", "content": "What is my name?"},
    ]
    r = await client.chat.completions.create(model=model.name, messages=history, max_tokens=8)  # type: ignore[arg-type]
    expected = len(model.tokenizer.encode(model.template.render(history), add_special_tokens=False).ids)
    assert r.usage is not None
    assert r.usage.prompt_tokens == expected


async def test_max_tokens_stop_and_determinism(client: AsyncOpenAI, model: LoadedModel) -> None:
    short = await client.chat.completions.create(model=model.name, messages=STORY, max_tokens=5)  # type: ignore[arg-type]
    assert short.usage is not None
    assert short.usage.completion_tokens == 5
    assert short.choices[0].finish_reason == "length"
    newer = await client.chat.completions.create(model=model.name, messages=STORY, max_completion_tokens=5)  # type: ignore[arg-type]
    assert newer.choices[0].message.content == short.choices[0].message.content
    words = (short.choices[0].message.content or "").split()
    stopped = await client.chat.completions.create(
        model=model.name,
        messages=STORY,
        max_tokens=20,
        stop=[words[-1]],
        temperature=0,  # type: ignore[arg-type]
    )
    assert words[-1] not in (stopped.choices[0].message.content or "")
    assert stopped.choices[0].finish_reason == "stop"
    sampled = [
        (await client.chat.completions.create(
            model=model.name, messages=STORY, max_tokens=12, temperature=0.9, seed=5  # type: ignore[arg-type]
        )).choices[0].message.content
        for _ in range(2)
    ]  # fmt: skip
    assert sampled[0] == sampled[1]


async def test_logit_bias_forces_and_bans_tokens(client: AsyncOpenAI, model: LoadedModel) -> None:
    ids = model.tokenizer.encode("Zebra", add_special_tokens=False).ids
    forced = await client.chat.completions.create(
        model=model.name,
        messages=STORY,
        max_tokens=1,
        logit_bias={str(ids[0]): 100},  # type: ignore[arg-type]
    )
    assert forced.choices[0].message.content == model.tokenizer.decode(ids[:1])
    plain = await client.chat.completions.create(model=model.name, messages=STORY, max_tokens=1)  # type: ignore[arg-type]
    first = model.tokenizer.encode(plain.choices[0].message.content or "", add_special_tokens=False).ids[0]
    banned = await client.chat.completions.create(
        model=model.name,
        messages=STORY,
        max_tokens=1,
        logit_bias={str(first): -100},  # type: ignore[arg-type]
    )
    assert banned.choices[0].message.content != plain.choices[0].message.content


async def test_concurrent_streams_all_complete(client: AsyncOpenAI, model: LoadedModel) -> None:
    prompts = [[{"role": "user", "content": f"Count from {i} to {i + 3}."}] for i in range(3)]

    async def run(messages: list[dict[str, str]], stream: bool) -> str:
        if not stream:
            r = await client.chat.completions.create(model=model.name, messages=messages, max_tokens=16)  # type: ignore[arg-type]
            return r.choices[0].message.content or ""
        s = await client.chat.completions.create(model=model.name, messages=messages, max_tokens=16, stream=True)  # type: ignore[arg-type]
        return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

    together = await asyncio.gather(*(run(p, True) for p in prompts))
    alone = [await run(p, False) for p in prompts]
    assert together == alone


async def test_wrong_or_missing_key_is_401(api: str, model: LoadedModel) -> None:
    async with AsyncOpenAI(base_url=api, api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as err:
            await bad.chat.completions.create(model=model.name, messages=PARIS)  # type: ignore[arg-type]
    assert err.value.code == "invalid_api_key"
    async with aiohttp.ClientSession() as http, http.get(f"{api}/models") as r:
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": PARIS}, "model"),
        ({"model": "M", "messages": []}, "messages"),
        ({"model": "M", "messages": "hi"}, "messages"),
        ({"model": "M", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"model": "M", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"model": "M", "messages": PARIS, "surprise": 1}, "surprise"),
        ({"model": "M", "messages": PARIS, "n": 2}, "n"),
        ({"model": "M", "messages": PARIS, "temperature": "hot"}, "temperature"),
        ({"model": "M", "messages": PARIS, "max_tokens": 0}, "max_tokens"),
        ({"model": "M", "messages": PARIS, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "M", "messages": PARIS, "stream": "yes"}, "stream"),
        ({"model": "M", "messages": PARIS, "logit_bias": {"12": 101}}, "logit_bias"),
        ({"model": "M", "messages": PARIS, "logit_bias": {"-3": 5}}, "logit_bias"),
        ({"model": "M", "messages": PARIS, "logit_bias": {"twelve": 5}}, "logit_bias"),
        ({"model": "M", "messages": PARIS, "logit_bias": {"12": True}}, "logit_bias"),
        ({"model": "M", "messages": PARIS, "logit_bias": [12, 5]}, "logit_bias"),
        ({"model": "M", "messages": PARIS, "logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ([1, 2, 3], None),
    ],
)
async def test_bad_requests_are_400_in_openai_shape(
    api: str, model: LoadedModel, body: object, param: str | None
) -> None:
    if isinstance(body, dict) and body.get("model") == "M":
        body = {**body, "model": model.name}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as http, http.post(f"{api}/chat/completions", json=body, headers=headers) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_malformed_json_is_400(api: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for raw in (b"{not json", b"\xff\xfe", b""):
            async with http.post(f"{api}/chat/completions", data=raw, headers=headers) as r:
                assert r.status == 400
                assert "JSON" in (await r.json())["error"]["message"]


async def test_unknown_model_is_404(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(model="gpt-4o", messages=PARIS)  # type: ignore[arg-type]
    assert err.value.code == "model_not_found"


async def test_oversize_input(client: AsyncOpenAI, model: LoadedModel) -> None:
    huge = [{"role": "user", "content": "word " * 300_000}]
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model=model.name, messages=huge)  # type: ignore[arg-type]
    assert err.value.status_code == 413
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=model.name, messages=long)  # type: ignore[arg-type]
    assert bad.value.code == "context_length_exceeded"


def _file_part(name: str, data: bytes, mime: str = "text/plain") -> dict[str, object]:
    encoded = base64.b64encode(data).decode()
    return {"type": "file", "file": {"filename": name, "file_data": f"data:{mime};base64,{encoded}"}}


async def test_file_parts_are_read_into_the_message(client: AsyncOpenAI, model: LoadedModel) -> None:
    note = b"Meeting note. The code word for the trip is PELICAN. Bring warm clothes."
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is the code word for the trip?"}, _file_part("note.txt", note),
    ]}]  # fmt: skip
    reply = await client.chat.completions.create(model=model.name, messages=messages, max_tokens=24)  # type: ignore[arg-type]
    assert "PELICAN" in (reply.choices[0].message.content or "").upper()
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 40  # the note was in the prompt


@pytest.mark.parametrize(
    ("part", "says"),
    [
        (_file_part("empty.txt", b""), "this file is empty"),
        (_file_part("data.bin", bytes(range(256)) * 8, "application/octet-stream"), "supported"),
        ({"type": "file", "file": {"filename": "x.txt", "file_data": "not a data url"}}, "data URL"),
        ({"type": "file", "file": {"filename": "x.txt", "file_data": "data:text/plain;base64,%%%"}}, "base64"),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "file_id"),
        ({"type": "image_url", "image_url": {"url": "http://x/y.png"}}, "only text parts"),
    ],
)
async def test_bad_file_parts_are_400_with_the_reason(
    client: AsyncOpenAI, model: LoadedModel, part: dict[str, object], says: str
) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Summarise it"}, part]}]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=model.name, messages=messages)  # type: ignore[arg-type]
    assert says in bad.value.message


async def test_client_disconnect_cancels_generation(client: AsyncOpenAI, engine: Engine, model: LoadedModel) -> None:
    before = engine.generator.cancelled
    stream = await client.chat.completions.create(model=model.name, messages=STORY, max_tokens=400, stream=True)  # type: ignore[arg-type]
    received = 0
    async for _chunk in stream:
        received += 1
        if received == 3:
            break
    await stream.close()
    for _ in range(200):
        if engine.generator.cancelled > before and not engine.generator.active:
            break
        await asyncio.sleep(0.05)
    assert engine.generator.cancelled == before + 1
    assert not engine.generator.active
    # the slot is free: the next request is served
    r = await client.chat.completions.create(model=model.name, messages=PARIS, max_tokens=4)  # type: ignore[arg-type]
    assert r.choices[0].message.content


async def test_rate_limit_is_429_with_retry_after(engine: Engine, settings: Settings, model: LoadedModel) -> None:
    engine.settings = _settings(settings, api_requests_per_minute=2)
    async with run_api(engine, engine.settings) as url, AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0) as c:
        for _ in range(2):
            await c.chat.completions.create(model=model.name, messages=PARIS, max_tokens=2)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as err:
            await c.chat.completions.create(model=model.name, messages=PARIS, max_tokens=2)  # type: ignore[arg-type]
    assert 0 < int(err.value.response.headers["Retry-After"]) <= 60


async def test_busy_model_is_503(settings: Settings, store: Store, model: LoadedModel) -> None:
    runner = OnnxRunner(model, device="cpu", max_len=1024)
    async with Generator(runner, max_waiting=1) as gen:
        engine = Engine(_settings(settings), store, gen, model)
        async with run_api(engine, engine.settings) as url, AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0) as c:
            running = await c.chat.completions.create(model=model.name, messages=STORY, max_tokens=800, stream=True)  # type: ignore[arg-type]
            await anext(aiter(running))  # the model is busy with this one
            waiting = asyncio.create_task(
                c.chat.completions.create(model=model.name, messages=STORY, max_tokens=800, stream=True)  # type: ignore[arg-type]
            )
            for _ in range(100):  # until the second request sits in the (one-place) queue
                if gen._jobs.qsize() == 1:
                    break
                await asyncio.sleep(0.02)
            with pytest.raises(openai.InternalServerError) as err:
                await c.chat.completions.create(model=model.name, messages=PARIS, max_tokens=2)  # type: ignore[arg-type]
            assert err.value.status_code == 503
            assert err.value.response.headers["Retry-After"] == "1"
            await running.close()  # disconnecting frees the model for the waiting request
            second = await waiting
            await anext(aiter(second))
            await second.close()


class _Failing(ScriptedGenerator):
    """Fails the way a remote generator can: Redis gone, or the job set aside after killing workers."""

    error: Exception = StoreUnavailable("Redis is unreachable")

    async def stream(self, *args: object, **kwargs: object) -> AsyncIterator[Delta | Finished]:  # type: ignore[override]
        yield Delta("partial ")
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [(StoreUnavailable("storage is temporarily unavailable"), 503), (ParleyError("this request was set aside"), 500)],
)
async def test_generation_failures_get_a_clear_error(
    settings: Settings, store: Store, model: LoadedModel, error: Exception, status: int
) -> None:
    gen = _Failing(model)
    gen.error = error
    engine = Engine(_settings(settings), store, gen, model)  # type: ignore[arg-type]
    async with run_api(engine, engine.settings) as url, aiohttp.ClientSession() as http:
        body = {"model": model.name, "messages": PARIS}
        async with http.post(f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.status == status
            payload = await r.json()
    assert payload["error"]["message"] == str(error)
    assert payload["error"]["type"] == "server_error"


def test_no_keys_means_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PARLEY_API_KEYS"):
        load_settings(api_port=8080, api_host="0.0.0.0", data_dir=tmp_path)
    assert load_settings(api_port=8080, api_host="0.0.0.0", api_keys="k1", data_dir=tmp_path).api_key_list == ["k1"]
