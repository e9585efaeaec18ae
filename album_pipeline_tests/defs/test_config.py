"""Every Dagster Config agrees with the core dataclasses it feeds: same defaults, every core field reachable."""

import dataclasses
import importlib
import inspect
import pkgutil

import dagster as dg
import pydantic
import pytest

import album_pipeline.defs
from album_pipeline.data.manifest import SplitFractions
from album_pipeline.defs.config import CoreConfig, core_default, core_field
from album_pipeline.defs.labeled import LabeledManifestConfig
from album_pipeline.defs.unlabeled import UnlabeledManifestConfig


def _configs() -> list[type[dg.Config]]:
    found = {}
    for module_info in pkgutil.iter_modules(album_pipeline.defs.__path__):
        module = importlib.import_module(f"album_pipeline.defs.{module_info.name}")
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, dg.Config) and value.__module__ == module.__name__:
                found[value.__qualname__] = value
    return [found[name] for name in sorted(found)]


CONFIGS = _configs()
CORE_CONFIGS = [config for config in CONFIGS if issubclass(config, CoreConfig) and config.core_types]
PAIRS = [(config, core) for config in CORE_CONFIGS for core in config.core_types]


def _ids(pair):
    config, core = pair
    return f"{config.__name__}->{core.__name__}"


def test_configs_are_found():
    assert len(CORE_CONFIGS) >= 1


@pytest.mark.parametrize("pair", PAIRS, ids=_ids)
def test_every_core_field_is_reachable_or_fixed(pair):
    config, core = pair
    unreachable = [
        field.name
        for field in dataclasses.fields(core)
        if field.init and field.name not in config.model_fields and field.name not in config.fixed_core_fields
    ]
    assert unreachable == [], (
        f"{config.__name__} exposes none of {unreachable} of {core.__name__}: add a core_field or list them "
        "in fixed_core_fields"
    )


@pytest.mark.parametrize("pair", PAIRS, ids=_ids)
def test_defaults_agree_with_the_core(pair):
    config, core = pair
    core_names = {field.name for field in dataclasses.fields(core) if field.init}
    disagreements = {}
    for name, info in config.model_fields.items():
        if name not in core_names or name in config.stage_overrides:
            continue
        expected = core_default(core, name)
        expected = list(expected) if isinstance(expected, tuple) else expected
        if info.get_default(call_default_factory=True) != expected:
            disagreements[name] = (info.get_default(call_default_factory=True), expected)
    assert disagreements == {}, f"{config.__name__} vs {core.__name__} (config, core): {disagreements}"


@pytest.mark.parametrize("config", CORE_CONFIGS, ids=lambda config: config.__name__)
def test_stage_overrides_name_real_fields_with_reasons(config):
    for name, reason in config.stage_overrides.items():
        assert name in config.model_fields, f"{config.__name__}.stage_overrides names unknown field {name}"
        assert any(name in {f.name for f in dataclasses.fields(core)} for core in config.core_types)
        assert len(reason) > 10, f"{config.__name__}.stage_overrides[{name!r}] needs a reason"
    for name in config.fixed_core_fields:
        assert name not in config.model_fields, f"{config.__name__}: {name} is both fixed and exposed"


@pytest.mark.parametrize("config", CORE_CONFIGS, ids=lambda config: config.__name__)
def test_defaults_build_every_core_object(config):
    config()  # the core validates the defaults when the Config is read


@dataclasses.dataclass(frozen=True)
class _Core:
    steps: int = 10
    betas: tuple[float, float] = (0.5, 0.9)
    width: int = dataclasses.field(default=4, metadata={"doc": "channels"})
    fixed_here: int = 1

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be at least 1, got {self.width}")


class _Config(CoreConfig):
    core_types = (_Core,)
    fixed_core_fields = frozenset({"fixed_here"})
    stage_overrides = {"steps": "this stage runs longer for the test"}

    steps: int = core_field(_Core, "steps", override=20)
    betas: list[float] = core_field(_Core, "betas")
    width: int = core_field(_Core, "width")
    shell_only: bool = False


def test_core_field_takes_default_and_doc_and_to_core_converts():
    assert _Config.model_fields["width"].description == "channels"
    assert _Config.model_fields["betas"].get_default() == [0.5, 0.9]
    built = _Config(width=8).to_core(_Core, fixed_here=3)
    assert built == _Core(steps=20, betas=(0.5, 0.9), width=8, fixed_here=3)
    assert isinstance(built.betas, tuple)


def test_a_value_the_core_refuses_fails_when_the_config_is_read():
    with pytest.raises(pydantic.ValidationError, match="width must be at least 1, got 0"):
        _Config(width=0)


def test_split_fractions_are_checked_when_the_config_is_read():
    with pytest.raises(pydantic.ValidationError, match="split fractions must be non-negative"):
        LabeledManifestConfig(test=-0.1)
    assert UnlabeledManifestConfig(train=2, val=1, test=1).to_core(SplitFractions).as_mapping() == {
        "train": 2,
        "val": 1,
        "test": 1,
    }


def test_to_core_refuses_a_type_it_does_not_feed():
    @dataclasses.dataclass(frozen=True)
    class Other:
        x: int = 0

    with pytest.raises(TypeError, match="does not feed Other"):
        _Config().to_core(Other)


def test_run_config_problems_name_asset_and_field_and_what_is_allowed():
    from album_pipeline.definitions import defs
    from album_pipeline.defs.config import run_config_problems
    from album_pipeline.profiles import PROFILES, apply_overrides, run_config_for

    job = defs.resolve_job_def("demo_pipeline")
    assert all(run_config_problems(job, PROFILES[name]) == [] for name in PROFILES)
    overrides = ["nope.x=1", "finetuned_generator.stepz=5", "finetuned_generator.lr_generator=fast"]
    problems = sorted(run_config_problems(job, apply_overrides(run_config_for("demo"), overrides[:2])))
    assert problems[0] == "`finetuned_generator.stepz` is not a setting; did you mean `steps`?"
    assert problems[1].startswith("`nope` is not an asset with settings; choose one of ")
    (wrong_type,) = run_config_problems(job, apply_overrides(run_config_for("demo"), overrides[2:]))
    assert wrong_type.startswith("`finetuned_generator.lr_generator`: Input should be a valid number")
    (steps,) = run_config_problems(
        job, apply_overrides(run_config_for("demo"), ["pretrained_generator.steps=0"])
    )
    assert steps == "`pretrained_generator`: steps must be at least 1, got 0."
