"""params.yaml validation: profiles merge, unknown keys and bad values name the key."""

from pathlib import Path

import pytest
import yaml

from semivdn.config import PROFILES, ConfigError, config_from_dict, load_config

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_demo_is_default_and_profiles_override(raw: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMIVDN_PROFILE", raising=False)
    demo = config_from_dict(raw)
    paper = config_from_dict(raw, "paper")
    assert demo.profile == "demo"
    # the paper's settings, §4.2
    assert (paper.data.frames_per_clip, paper.data.crop, paper.train.batch_size) == (3, 256, 4)
    assert (paper.train.lr, paper.train.iters) == (1e-4, 300_000)
    assert paper.loss.gmm_components == 3
    # untouched keys keep the base value
    assert paper.train.ema == demo.train.ema == 0.99


def test_environment_selects_profile(raw: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMIVDN_PROFILE", "smoke")
    assert config_from_dict(raw).profile == "smoke"
    assert config_from_dict(raw, "demo").profile == "demo"  # explicit beats the environment


def test_load_config_reads_the_file() -> None:
    cfg = load_config(PARAMS, "smoke")
    assert cfg.make_data.height == 48
    assert cfg.snow.size_range == (0.6, 4.0)  # YAML lists become typed tuples
    assert set(cfg.variants) == {"M1", "M2", "M2+ft", "M3", "full"}
    assert cfg.model_for("M1").tde is False and cfg.model_for("full").tde is True


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"train": {"itrs": 5}}, "train.itrs: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"train": {"iters": "many"}}, "train.iters: expected an integer"),
        ({"train": {"lr": -1.0}}, "train.lr: must be > 0"),
        ({"train": {"ema": 1.5}}, "train.ema"),
        ({"data": {"frames_per_clip": 4}}, "data.frames_per_clip"),
        ({"snow": {"haze_range": [0.9, 0.1]}}, "snow.haze_range"),
        ({"snow": {"haze_gradient": 1.5}}, "snow.haze_gradient: must lie in"),
        ({"paired_randomization": {"haze_gradient": [0.0, 2.0]}}, "paired_randomization.haze_gradient"),
        ({"paired_randomization": {"opacity_scale": [0.5, 1.5]}}, "paired_randomization.opacity_scale"),
        ({"paired_randomization": {"defocus": [2.0, 1.0]}}, "paired_randomization.defocus"),
        ({"snow": {"defocus": -1.0}}, "snow.defocus: must lie in"),
        ({"train": {"device": "tpu"}}, "train.device: must be one of"),
        ({"model": {"dim": 30, "heads": 4}}, "model.dim"),
        ({"variants": {"X": {"tde": "yes", "mean_teacher": False, "dcr": False}}}, "variants.X.tde"),
        ({"profile": "huge"}, "profile: must be one of"),
        ({"profiles": {"tiny": {}}}, "profiles.tiny: unknown profile"),
    ],
)
def test_bad_values_name_the_key(raw: dict, patch: dict, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMIVDN_PROFILE", raising=False)
    merged = {**raw}
    for key, value in patch.items():
        merged[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(merged)


def test_set_overrides_apply_after_the_profile_and_are_validated() -> None:
    release = load_config(PARAMS, "release")
    tuned = load_config(PARAMS, "release", ["train.batch_size=16", "variants.M2+ft.iters=900", "data.crop=128",
                                            "train.lr=2.0e-4", "mlflow.tracking_uri=sqlite:////tmp/a=b.db"])
    assert (tuned.train.batch_size, tuned.train_for("M2+ft").iters, tuned.data.crop) == (16, 900, 128)
    assert tuned.train.lr == 2e-4 and tuned.mlflow.tracking_uri == "sqlite:////tmp/a=b.db"  # split at the first '='
    assert tuned.data.identity_fraction == release.data.identity_fraction  # the profile's other values stay
    assert tuned.make_data == release.make_data


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_sise=16", "train.batch_sise: unknown key"),
        ("train.batch_size=many", "train.batch_size: expected an integer"),
        ("train.batch_size", "expected KEY=VALUE"),
        ("train..lr=1", "expected KEY=VALUE"),
        ("train.lr=[1", "invalid value"),
    ],
)
def test_bad_set_overrides_are_rejected(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(PARAMS, "smoke", [override])


def test_unknown_variant_is_an_error() -> None:
    cfg = load_config(PARAMS, "smoke")
    with pytest.raises(ConfigError, match=r"variants\.M9"):
        cfg.variant("M9")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")


def test_variant_overrides_iterations_and_learning_rate() -> None:
    demo, smoke = load_config(PARAMS, "demo"), load_config(PARAMS, "smoke")
    assert demo.train_for("M2").iters == demo.train.iters and demo.train_for("M2").lr == demo.train.lr
    assert demo.train_for("full").lr == demo.variant("full").lr  # fine-tuning from M2
    assert smoke.train_for("full").iters == 6  # profiles reach into variants too
    full = demo.train_for("full")  # the paper's batch of 4 clips, shared between labelled and unlabelled
    assert (full.batch_size, full.real_batch_size) == (demo.variant("full").batch_size,
                                                       demo.variant("full").real_batch_size) == (3, 1)
    assert demo.train_for("M2").batch_size == demo.train.batch_size == 4


def test_variant_batch_overrides_are_validated(raw: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMIVDN_PROFILE", raising=False)
    for key in ("batch_size", "real_batch_size"):
        bad = {**raw, "variants": {"X": {"tde": True, "mean_teacher": True, "dcr": False, key: 0}}}
        with pytest.raises(ConfigError, match=rf"variants\.X\.{key}: must be >= 1"):
            config_from_dict(bad)


def test_dcr_without_mean_teacher_is_rejected(raw: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMIVDN_PROFILE", raising=False)
    bad = {**raw, "variants": {"X": {"tde": True, "mean_teacher": False, "dcr": True}}}
    with pytest.raises(ConfigError, match="needs mean_teacher"):
        config_from_dict(bad)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_m2_ft_control_gets_exactly_the_semi_supervised_variants_extra_training(profile: str) -> None:
    cfg = load_config(PARAMS, profile)
    control = cfg.variant("M2+ft")
    assert (control.tde, control.mean_teacher, control.dcr, control.init) == (True, False, False, "M2")
    control_train = cfg.train_for("M2+ft")
    for variant in ("M3", "full"):
        assert cfg.variant(variant).init == "M2"
        train = cfg.train_for(variant)
        assert (control_train.iters, control_train.lr, control_train.poly_power) == (train.iters, train.lr,
                                                                                     train.poly_power)
        # the same clips per step: the control's are all labelled, the mean teacher's partly unlabelled
        assert control_train.batch_size == train.batch_size + train.unlabelled_batch_size
