"""The deploy files parse, and every setting and command they use exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from bots.cli import _parser
from engine.runtime.settings import Settings

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile*"))
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR",
    "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
SETTING = re.compile(
    r"\b(?:PARLEY_[A-Z0-9_]*[A-Z0-9]|TELEGRAM_[A-Z0-9_]*[A-Z0-9]|DISCORD_[A-Z0-9_]*[A-Z0-9]|REDIS_URL)\b"
)


def env_names() -> set[str]:
    """Every variable Settings reads, aliases included."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(a for a in alias.choices if isinstance(a, str))
        else:
            names.add(f"PARLEY_{name.upper()}")
    return names


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments and blanks left out."""
    lines, pending = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, f"{dockerfile.name} ends inside a continued line"
    return [(line.split(None, 1)[0], line.split(None, 1)[1] if " " in line else "") for line in lines]


def yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    """The manifests' objects (the kustomization that lists them is not one)."""
    manifests = [p for p in YAML_FILES if p.parent.name == "k8s" and p.name != "kustomization.yaml"]
    return [doc for path in manifests for doc in yaml_documents(path)]


def parley_commands() -> list[list[str]]:
    """Every `parley ...` command line the Dockerfiles, the compose file and the manifests run."""
    commands = []
    for dockerfile in DOCKERFILES:
        for instruction, args in instructions(dockerfile):
            if instruction == "RUN":
                commands += [shlex.split(part) for part in re.split(r"&&|;", args) if part.split()[:1] == ["parley"]]
            elif instruction == "CMD":
                commands.append(json.loads(args))
    compose = yaml_documents(DEPLOY / "compose.yaml")[0]
    commands += [s["command"] for s in compose["services"].values() if "parley" in s.get("command", [])]
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            commands += [c["args"] for c in obj["spec"]["template"]["spec"]["containers"] if "args" in c]
    return commands


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert yaml_documents(path)


def test_kubernetes_objects_are_complete_and_namespace_less() -> None:
    objects = k8s_objects()
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "StatefulSet", "Secret", "ConfigMap", "HorizontalPodAutoscaler", "ScaledObject"} <= kinds
    for obj in objects:
        assert obj["apiVersion"], obj
        assert obj["metadata"]["name"], obj
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
    listed = yaml_documents(DEPLOY / "k8s" / "kustomization.yaml")[0]["resources"]
    assert all((DEPLOY / "k8s" / name).is_file() for name in listed)


def test_probes_use_the_health_endpoints() -> None:
    deployments = [
        obj
        for obj in k8s_objects()
        if obj["kind"] == "Deployment" and obj["metadata"]["labels"].get("app.kubernetes.io/name") == "parley"
    ]
    assert {d["metadata"]["name"] for d in deployments} == {"parley-bots", "parley-worker"}
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = next(d for d in deployments if d["metadata"]["name"] == "parley-worker")
    assert worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_search_engine_is_optional_and_answers_json() -> None:
    compose = yaml_documents(DEPLOY / "compose.yaml")[0]["services"]["searxng"]
    assert compose["profiles"] == ["search"]  # only with --profile search
    settings = yaml_documents(DEPLOY / "searxng" / "settings.yml")[0]
    assert "json" in settings["search"]["formats"]  # what Parley reads; SearXNG's default is html only
    (searxng,) = [obj for obj in k8s_objects() if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "searxng"]
    assert searxng["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "searxng.yaml" not in yaml_documents(DEPLOY / "k8s" / "kustomization.yaml")[0]["resources"]


def test_secrets_hold_placeholders_only() -> None:
    (secret,) = [obj for obj in k8s_objects() if obj["kind"] == "Secret"]
    assert set(secret["stringData"].values()) == {""}


def test_compose_persists_redis_and_reserves_a_gpu() -> None:
    compose = yaml_documents(DEPLOY / "compose.yaml")[0]
    services = compose["services"]
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["command"][redis["command"].index("--appendfsync") + 1] == "everysec"
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert services["bots"]["environment"]["PARLEY_ENGINE"] == "remote"
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    for name in ("bots", "worker"):
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_instructions_are_well_formed(dockerfile: Path) -> None:
    parsed = instructions(dockerfile)
    assert parsed[0][0] == "FROM"
    stages = set()
    for instruction, args in parsed:
        assert instruction in INSTRUCTIONS, f"{dockerfile.name}: unknown instruction {instruction}"
        assert args, f"{dockerfile.name}: {instruction} without arguments"
        if instruction == "FROM" and " AS " in args:
            stages.add(args.split(" AS ")[1].strip())
        if instruction == "COPY" and (source := re.search(r"--from=(\S+)", args)):
            assert source.group(1) in stages, f"{dockerfile.name}: COPY from an unknown stage"
        if instruction == "CMD":
            assert isinstance(json.loads(args), list)  # exec form: signals reach the process
    # a builder stage with the conversion tools, and a final image without them
    final = dockerfile.read_text().rsplit("\nFROM ", 1)[1]
    assert "[convert]" not in final
    assert "/models" in final


def test_commands_exist() -> None:
    commands = parley_commands()
    assert {tuple(c[:2]) for c in commands} >= {("parley", "serve"), ("parley", "worker"), ("parley", "model")}
    for command in commands:
        _parser().parse_args(command[1:])  # exits (fails the test) on an unknown command or option


def test_every_setting_used_exists_and_is_documented() -> None:
    known = env_names()
    example = (ROOT / ".env.example").read_text()
    files = [*YAML_FILES, *DOCKERFILES, DEPLOY / "README.md"]
    used = {name: path.name for path in files for name in SETTING.findall(path.read_text())}
    assert "PARLEY_ENGINE" in used
    for name, where in sorted(used.items()):
        assert name in known, f"{where} uses {name}, which Settings does not read"
        assert f"# {name}=" in example, f"{where} uses {name}, which .env.example does not document"
