"""The `parley` command as a person runs it: separate processes, embedded Redis, the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.model.registry import LoadedModel


def _parley(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, model: LoadedModel) -> dict[str, str]:
    """No REDIS_URL: every process starts (or joins) the embedded Redis in its data directory."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_") and k != "REDIS_URL"}
    return {
        **clean,
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_MODEL_DIR": str(model.info.path.parent),
        "PARLEY_MODEL": model.name,
        "PARLEY_MAX_REPLY_TOKENS": "48",
    }


@pytest.mark.slow
def test_ask_continues_a_conversation_across_processes(env: dict[str, str]) -> None:
    first = _parley(["ask", "What is the capital of France? Answer in one sentence.", "-c", "trip", "--json"], env)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert "Paris" in data["reply"]
    assert data["conversation"].startswith("cli:trip:")
    for field in ("prompt_tokens", "completion_tokens", "time_to_first_token_ms", "tokens_per_second"):
        assert data[field] > 0, field

    second = _parley(["ask", "And what is its most famous tower?", "-c", "trip"], env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip()

    exported = _parley(["export", "-c", "trip"], env)
    turns = json.loads(exported.stdout)["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0]["content"].startswith("What is the capital of France?")
    assert turns[1]["content"] == data["reply"]
    # another conversation id sees none of it
    other = json.loads(_parley(["export", "-c", "other"], env).stdout)
    assert other["turns"] == []


@pytest.mark.slow
def test_ask_without_a_conversation_starts_from_nothing(env: dict[str, str]) -> None:
    question = "Name one primary colour."
    runs = [json.loads(_parley(["ask", question, "--json"], env).stdout) for _ in range(2)]
    # Nothing carried over: the same question costs the same prompt, in two different conversations.
    assert runs[0]["prompt_tokens"] == runs[1]["prompt_tokens"]
    assert runs[0]["conversation_id"] != runs[1]["conversation_id"]
    assert json.loads(_parley(["export"], env).stdout)["turns"] == []  # `parley chat`'s default is untouched
    # The id --json reports continues that one conversation.
    follow = json.loads(_parley(["ask", question, "-c", runs[0]["conversation_id"], "--json"], env).stdout)
    assert follow["conversation_id"] == runs[0]["conversation_id"]
    assert follow["prompt_tokens"] > runs[0]["prompt_tokens"]


@pytest.mark.slow
def test_ask_reads_a_file(env: dict[str, str], tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Meeting note. The code word for the trip is PELICAN. Bring warm clothes.\n")
    result = _parley(["ask", "--file", str(note), "What is the code word for the trip?", "--json"], env)
    assert result.returncode == 0, result.stderr
    assert "PELICAN" in json.loads(result.stdout)["reply"].upper()


@pytest.mark.parametrize(
    ("content", "name", "says"),
    [
        (b"", "empty.txt", "this file is empty"),
        (bytes(range(256)) * 40, "data.bin", "supported"),
        (b"%PDF-1.7\n1 0 obj <<", "cut.pdf", "damaged"),
    ],
)
def test_ask_refuses_a_file_it_cannot_read_in_one_line(
    env: dict[str, str], tmp_path: Path, content: bytes, name: str, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = _parley(["ask", "--file", str(path), "Summarise it"], env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert says in result.stderr
    missing = _parley(["ask", "--file", str(tmp_path / "nope.pdf")], env)
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr


def test_bad_setting_fails_at_start_naming_it(env: dict[str, str]) -> None:
    result = _parley(["ask", "hi"], {**env, "PARLEY_CONTEXT_TOKENS": "lots"})
    assert result.returncode == 2
    assert "PARLEY_CONTEXT_TOKENS" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_is_a_clear_error(env: dict[str, str]) -> None:
    result = _parley(["ask", "hi"], {**env, "PARLEY_MODEL": "no-such-model"})
    assert result.returncode == 1
    assert "unknown model 'no-such-model'" in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_question_is_refused(env: dict[str, str]) -> None:
    result = _parley(["ask", "   "], env)
    assert result.returncode == 1
    assert "empty" in result.stderr


def test_model_list_and_verify(env: dict[str, str], model: LoadedModel) -> None:
    listed = _parley(["model", "list"], env)
    assert listed.returncode == 0
    assert model.name in listed.stdout
    available = _parley(["model", "list", "--available"], env)
    assert available.returncode == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in available.stdout.splitlines()[1:-1]}
    assert set(rows) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert rows["qwen2.5-coder-1.5b"][2:4] == ["1,117 MB", "Apache-2.0"]
    assert rows[model.name][-1] == "yes"
    missing = _parley(["model", "verify", "nope"], env)
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr


def _chat(script: str, conversation: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", "chat", "-c", conversation],
        input=script, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def test_chat_session_in_the_terminal(env: dict[str, str]) -> None:
    script = "/system You are terse.\n/system\nWhat is 2+2?\n/usage\n/reset\n/export\n/about\n/help\n/quit\n"
    result = _chat(script, "t", env)
    assert result.returncode == 0, result.stderr
    assert "Persona set:\nYou are terse." in result.stdout
    assert "This conversation's persona:\nYou are terse." in result.stdout
    assert '"requests": 1' in result.stdout
    assert "Started over" in result.stdout
    assert '"turns": []' in result.stdout
    # the shared commands, as the chat platforms show them
    assert f"answering with {env['PARLEY_MODEL']}" in result.stdout
    assert "Up for 0 min" in result.stdout
    assert "/about – Version, model, uptime and sources" in result.stdout  # noqa: RUF001


def test_forget_in_the_terminal_erases_the_conversation(env: dict[str, str]) -> None:
    result = _chat("/system You are terse.\nWhat is 2+2?\n/forget\n/export\n/quit\n", "private", env)
    assert result.returncode == 0, result.stderr
    assert "erased our conversation and your usage" in result.stdout
    exported = json.loads(_parley(["export", "-c", "private"], env).stdout)
    assert exported["turns"] == []
    assert exported["persona"] is None


def test_serve_runs_the_api_health_and_metrics_until_sigterm(env: dict[str, str], model: LoadedModel) -> None:
    import signal
    import socket
    import time
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bots.cli", "serve"],
        env={**env, "PARLEY_API_PORT": str(port), "PARLEY_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as r:
                    assert model.name in r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the API did not come up"
                time.sleep(0.2)
        # health, readiness and metrics share the API's port, outside the API's keys and error shapes
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
            assert json.loads(r.read()) == {"status": "ok"}
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
            assert json.loads(r.read())["checks"] == {"redis": "ok", "model": "ok"}
        body = {"model": model.name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        ask = urllib.request.Request(
            f"{base}/v1/chat/completions", data=json.dumps(body).encode(), headers={"X-Request-Id": "cli-test-1"}
        )
        with urllib.request.urlopen(ask, timeout=60) as r:
            assert r.headers["X-Request-Id"] == "cli-test-1"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        requests = {s.labels["platform"]: s.value for s in families["parley_requests"].samples}
        assert requests == {"api": 1.0}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/v1/nope", timeout=5)
        assert json.loads(missing.value.read())["error"]["code"] is None  # the API's own 404 shape
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"{base}/v1" in out
        assert f"{base}/healthz" in out
        assert f"Answering with {model.name} ({model.info.precision}" in out
        assert "PARLEY_MODEL chooses another" in out
        lines = [json.loads(line) for line in err.splitlines()]  # every log line is one JSON object
        assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_knowledge_base_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "club").mkdir(parents=True)
    (docs / "club" / "fees.md").write_text(
        "# Rowing club fees\n\nThe Fennick rowing club charges 44 euros a year; juniors row for free."
    )
    (docs / "kiln.txt").write_text("The kiln is fired on Thursdays.")
    (docs / "junk.pdf").write_bytes(b"%PDF-1.7 not really")
    (docs / ".hidden.md").write_text("never added")

    added = _parley(["kb", "add", str(docs)], env)
    assert added.returncode == 0, added.stderr
    assert [line.split("\t")[1] for line in added.stdout.splitlines()] == ["club/fees.md", "kiln.txt"]
    assert "skipped" in added.stderr
    assert "junk.pdf" in added.stderr
    ids = [line.split("\t")[0].split()[1] for line in added.stdout.splitlines()]

    listed = _parley(["kb", "list"], env)
    assert listed.stdout.startswith("2 document(s) in global")

    asked = _parley(["ask", "How much does the Fennick rowing club charge a year?", "--json"], env)
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["sources"][0]["document"] == "club/fees.md"
    assert "Sources" in answer["reply"]

    assert _parley(["kb", "list", "--scope", "telegram:-100"], env).stdout.startswith("0 document(s)")
    bad = _parley(["kb", "add", str(docs), "--scope", "somewhere"], env)
    assert bad.returncode == 1
    assert "not a knowledge-base scope" in bad.stderr

    removed = _parley(["kb", "remove", *ids], env)
    assert removed.returncode == 0, removed.stderr
    assert _parley(["kb", "list"], env).stdout.startswith("0 document(s)")
    again = _parley(["kb", "remove", ids[0]], env)
    assert again.returncode == 1
    assert "no document" in again.stderr


def test_ask_search_without_a_search_engine_says_what_to_set(env: dict[str, str]) -> None:
    result = _parley(["ask", "--search", "What is new in Python 3.14?"], env)
    assert result.returncode == 1
    assert "PARLEY_SEARCH_URL" in result.stderr
