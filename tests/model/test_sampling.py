import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.contract import SamplingParams
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.convert.importer import _gguf_sampling, _write_generation_config
from engine.model.registry import MANIFEST, LoadedModel, load_model, read_generation, write_manifest
from engine.model.sampling import FALLBACK, Sampler, SamplingDefaults, generation_defaults
from engine.runtime.settings import Settings, load_settings
from engine.scaleout.jobs import params_from_json, params_to_json
from tests.fakes.generator import ScriptedGenerator


def _logits(seed: int = 0, n: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


def test_temperature_zero_is_argmax() -> None:
    logits = _logits()
    assert Sampler(SamplingParams()).choose(logits) == int(logits.argmax())


def test_logit_bias_shifts_choices_and_its_values_are_checked() -> None:
    logits = _logits(2)
    top, runner_up = np.argsort(-logits)[:2]
    gap = float(logits[top] - logits[runner_up])
    assert Sampler(SamplingParams(logit_bias=((int(runner_up), gap + 0.01),))).choose(logits) == runner_up
    assert Sampler(SamplingParams(logit_bias=((int(runner_up), gap - 0.01),))).choose(logits) == top
    assert Sampler(SamplingParams(logit_bias=((int(top), -100.0), (10**6, 100.0)))).choose(logits) == runner_up
    assert float(logits[top]) == float(_logits(2)[top])  # the caller's logits are left alone
    for bad in (((1, 100.5),), ((-1, 1.0),)):
        with pytest.raises(ValueError, match="logit_bias"):
            SamplingParams(logit_bias=bad)


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    logits = _logits(1)
    for params in (SamplingParams(temperature=1.0, top_k=1, seed=3), SamplingParams(temperature=1.0, top_p=1e-6)):
        assert {Sampler(params).choose(logits) for _ in range(20)} == {int(logits.argmax())}


def test_seed_reproduces_and_sampling_varies() -> None:
    logits = _logits(2)
    params = SamplingParams(temperature=1.5, seed=7)
    a = [Sampler(params).choose(logits) for _ in range(5)]
    s1, s2 = Sampler(params), Sampler(params)
    assert [s1.choose(logits) for _ in range(30)] == [s2.choose(logits) for _ in range(30)]
    many = Sampler(SamplingParams(temperature=1.5, seed=1))
    assert len({many.choose(logits) for _ in range(50)}) > 5
    assert len(set(a)) == 1  # fresh samplers with one seed agree


def test_top_k_restricts_choices() -> None:
    logits = _logits(3)
    top5 = set(np.argsort(-logits)[:5].tolist())
    s = Sampler(SamplingParams(temperature=5.0, top_k=5, seed=0))
    assert {s.choose(logits) for _ in range(200)} <= top5


def test_repetition_penalty_discourages_seen_tokens() -> None:
    logits = np.zeros(10, dtype=np.float32)
    logits[3], logits[4] = 2.0, 1.9
    s = Sampler(SamplingParams(repetition_penalty=1.5))
    s.observe([3])
    assert s.choose(logits) == 4


@pytest.mark.parametrize(
    "bad",
    [{"max_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1},
     {"repetition_penalty": 0.0}],
)  # fmt: skip
def test_bad_parameters_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)  # type: ignore[arg-type]


def test_repetition_penalty_divides_positive_logits_and_multiplies_negative_ones() -> None:
    s = Sampler(SamplingParams(repetition_penalty=2.0))
    s.observe([3])
    positive = np.array([0.0, 0.0, 0.0, 2.0, 1.5], dtype=np.float32)  # 2.0 / 2 = 1.0 < 1.5
    assert s.choose(positive) == 4
    s = Sampler(SamplingParams(repetition_penalty=2.0))
    s.observe([3])
    negative = np.array([-9.0, -9.0, -9.0, -1.0, -1.5], dtype=np.float32)  # -1.0 * 2 = -2.0 < -1.5
    assert s.choose(negative) == 4


def test_repetition_penalty_matches_transformers_over_prompt_and_reply() -> None:
    torch = pytest.importorskip("torch", reason="the reference needs the 'convert' extra")
    from transformers import RepetitionPenaltyLogitsProcessor

    rng = np.random.default_rng(5)
    prompt = [int(t) for t in rng.integers(0, 40, size=12)]
    sampler = Sampler(SamplingParams(repetition_penalty=1.3))
    sampler.observe(prompt)
    reference = RepetitionPenaltyLogitsProcessor(1.3)
    seen = list(prompt)
    for _ in range(30):
        logits = rng.normal(scale=3.0, size=64).astype(np.float32)
        theirs = reference(torch.tensor([seen]), torch.tensor(logits[None, :].copy()))
        token = sampler.choose(logits)
        assert token == int(theirs[0].argmax())
        seen.append(token)


# --- where the defaults come from: a setting, else the model's generation_config.json, else FALLBACK ---


def test_generation_config_fields_are_read_with_transformers_meanings() -> None:
    config = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "do_sample": True}
    assert generation_defaults(config) == SamplingDefaults(0.7, 0.8, 20, 1.05)
    # do_sample false is greedy in transformers, whatever the temperature says.
    assert generation_defaults({"temperature": 0.7, "do_sample": False}) == SamplingDefaults(temperature=0.0)


def test_generation_config_with_only_token_ids_sets_nothing() -> None:
    # What transformers writes for a model loaded from a GGUF.
    assert generation_defaults({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}) is None


def test_invalid_generation_config_fields_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    config = {"temperature": "hot", "top_p": 0.0, "top_k": 2.5, "repetition_penalty": True, "do_sample": "no"}
    assert generation_defaults(config) is None
    assert generation_defaults({"top_p": 1.5, "top_k": 40}) == SamplingDefaults(top_k=40)
    assert "ignoring top_p=1.5" in caplog.text


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", '"text"', "", "\udcff"], ids=["broken", "list", "string", "empty", "bytes"]
)
def test_a_malformed_generation_config_means_no_model_defaults(tmp_path: Path, content: str) -> None:
    (tmp_path / "generation_config.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    assert read_generation(tmp_path) is None


def test_an_absent_generation_config_means_no_model_defaults(tmp_path: Path) -> None:
    assert read_generation(tmp_path) is None


def test_a_setting_wins_over_the_model_which_wins_over_the_fallback(tiny_model: LoadedModel) -> None:
    bare = tiny_model.sampling_params(max_tokens=10)
    assert (bare.temperature, bare.top_p, bare.top_k, bare.repetition_penalty) == (
        FALLBACK.temperature, FALLBACK.top_p, FALLBACK.top_k, FALLBACK.repetition_penalty,
    )  # fmt: skip
    model = replace(tiny_model, generation=SamplingDefaults(temperature=0.7, top_k=20))
    own = model.sampling_params(max_tokens=10)
    assert (own.temperature, own.top_p, own.top_k) == (0.7, FALLBACK.top_p, 20)
    chosen = model.sampling_params(max_tokens=10, seed=3, temperature=0.0, top_p=0.5)
    assert (chosen.temperature, chosen.top_p, chosen.top_k, chosen.seed) == (0.0, 0.5, 20, 3)


def test_sampling_settings_are_unset_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEMPERATURE", "TOP_P", "TOP_K", "REPETITION_PENALTY"):
        monkeypatch.delenv(f"PARLEY_{name}", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    s = load_settings()
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty) == (None, None, None, None)
    monkeypatch.setenv("PARLEY_TEMPERATURE", "0")
    assert load_settings().temperature == 0.0
    monkeypatch.setenv("PARLEY_TEMPERATURE", "")  # as .env.example shows it: unset
    assert load_settings().temperature is None


async def test_the_engine_defaults_follow_settings_then_model(
    settings: Settings, store: Store, tiny_model: LoadedModel
) -> None:
    model = replace(tiny_model, generation=SamplingDefaults(temperature=0.7, repetition_penalty=1.1))
    own = Engine(settings.model_copy(update={"temperature": None}), store, ScriptedGenerator(model), model)
    assert (own.default_params().temperature, own.default_params().repetition_penalty) == (0.7, 1.1)
    greedy = Engine(settings.model_copy(update={"temperature": 0.0}), store, ScriptedGenerator(model), model)
    params = greedy.default_params()
    assert (params.temperature, params.repetition_penalty, params.max_tokens) == (0.0, 1.1, settings.max_reply_tokens)


def test_a_model_folder_generation_config_reaches_the_loaded_model(model: LoadedModel, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for f in model.info.path.iterdir():
        if f.name not in ("generation_config.json", MANIFEST):
            (folder / f.name).symlink_to(f)
    fields = {k: v for k, v in model.info.manifest.items() if k not in ("format", "files")}

    def with_generation_config(text: str) -> LoadedModel:
        (folder / "generation_config.json").write_text(text)
        write_manifest(folder, **fields)  # the file is checksummed like every other
        return load_model(folder)

    assert with_generation_config('{"eos_token_id": 2, "temperature": 0.6, "top_p": 0.95}').generation == (
        SamplingDefaults(temperature=0.6, top_p=0.95)
    )
    assert with_generation_config("{oops").generation is None  # still loads


def test_import_copies_the_sources_generation_config_with_overrides(tmp_path: Path) -> None:
    source, out = tmp_path / "hf", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    (source / "generation_config.json").write_text('{"eos_token_id": [1, 2], "do_sample": false}')
    _write_generation_config(source, None, out, {"temperature": 0.7, "top_k": 20})
    written = json.loads((out / "generation_config.json").read_text())
    assert written == {"eos_token_id": [1, 2], "do_sample": True, "temperature": 0.7, "top_k": 20}
    (out / "generation_config.json").unlink()
    (source / "generation_config.json").write_text("[]")  # not an object: left out
    _write_generation_config(source, None, out, None)
    assert not (out / "generation_config.json").exists()


def test_import_reads_a_ggufs_own_sampling_keys(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf", reason="writing a GGUF needs the 'convert' extra")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_float32("general.sampling.temp", 0.6)
    writer.add_int32("general.sampling.top_k", 30)
    writer.add_float32("general.sampling.penalty_repeat", 1.1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    found = _gguf_sampling(path)
    assert found["top_k"] == 30
    assert found["temperature"] == pytest.approx(0.6)
    assert found["repetition_penalty"] == pytest.approx(1.1)
    assert "top_p" not in found


def test_sampling_params_survive_the_job_stream() -> None:
    # What a front end sends a worker (PARLEY_ENGINE=remote) is what the worker samples with.
    params = SamplingParams(max_tokens=1, stop=("\n",), seed=7, logit_bias=((9, 100.0), (4, 99.5)))
    assert params_from_json(params_to_json(params)) == params
