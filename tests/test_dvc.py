"""The DVC graph: each stage depends on the code it imports, fine-tuning starts from params, no stage
registers or promotes; a portable tree. The slow end-to-end checks live in tests/test_dvc_repro.py."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from importgraph import ROOT, closure, import_graph, project_modules

from semivdn.config import PROFILES, load_config
from semivdn.summary import WIDTH, metrics_table

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
# Each stage's command, as the module its handler calls (semivdn/cli.py), whose import closure it runs.
STAGE_ENTRY = {"resolve_params": "semivdn.config", "make_data": "semivdn.data.make", "curate": "semivdn.data.curate",
               "train": "semivdn.train", "evaluate": "semivdn.eval.evaluate", "report": "semivdn.eval.report"}


def _code_files(deps: list[str]) -> set[str]:
    """The Python files a stage's dependency list covers (folders expand to their .py files)."""
    files = set()
    for dep in deps:
        path = ROOT / dep
        if dep.startswith("semivdn"):
            assert path.exists(), f"dependency {dep} does not exist"
            files |= {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")} if path.is_dir() else {dep}
    return files


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRY))
def test_stage_depends_on_every_module_its_command_imports(stage: str) -> None:
    modules = project_modules()
    needed = closure(import_graph(modules), [STAGE_ENTRY[stage], "semivdn.config"])
    needed_files = {modules[m].relative_to(ROOT).as_posix() for m in needed if modules[m].stat().st_size}
    spec = DVC_YAML["stages"][stage]
    deps = spec.get("do", spec)["deps"]
    missing = sorted(needed_files - _code_files(deps))
    assert missing == [], f"dvc.yaml stage {stage} reads these files but does not depend on them"


def test_every_stage_is_checked_and_none_registers_or_promotes() -> None:
    assert set(DVC_YAML["stages"]) == set(STAGE_ENTRY)
    commands = yaml.safe_dump(DVC_YAML["stages"])
    assert not re.search(r"semivdn (register|promote)", commands)


@pytest.mark.parametrize("profile", PROFILES)
def test_training_starts_from_the_checkpoint_params_name(profile: str) -> None:
    """dvc.yaml's `start` of each variant is the checkpoint of params' variants.<v>.init, in every profile."""
    cfg = load_config(ROOT / "params.yaml", profile)
    starts = {name: item["start"] for name, item in DVC_YAML["stages"]["train"]["foreach"].items()}
    assert set(starts) == set(cfg.variants)
    for name, variant in cfg.variants.items():
        expected = f"{cfg.paths.models}/{variant.init}/model.safetensors" if variant.init else "semivdn/models"
        assert starts[name] == expected, name


def test_stages_read_the_resolved_params_of_the_profile_params_yaml_names() -> None:
    """Every stage but resolve_params reads params.resolved.yaml under the `profile` DVC interpolates."""
    for name, spec in DVC_YAML["stages"].items():
        command = spec.get("do", spec)["cmd"]
        assert "--profile ${profile}" in command, name
        if name != "resolve_params":
            assert "--params params.resolved.yaml" in command, name
    committed = load_config(ROOT / "params.resolved.yaml", "demo")
    assert committed == load_config(ROOT / "params.yaml", yaml.safe_load((ROOT / "params.yaml").read_text())["profile"])


def test_no_absolute_machine_path_in_the_tree() -> None:
    """Tracked files name no machine's home or work folder (tests must run on any clone).

    The image's own user home (infra/docker) is a path inside the container, not a machine's.
    """
    pattern = r"(/work/|/root/|/home/[a-z]|/Users/[A-Za-z]|[A-Z]:\\\\Users)"
    found = subprocess.run(["git", "grep", "-n", "-I", "-E", pattern, "--", ".", ":!tests/test_dvc.py"],
                           cwd=ROOT, capture_output=True, text=True, check=False)
    assert found.returncode in (0, 1), found.stderr
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    container_home = re.search(r"\bHOME=(\S+)", dockerfile).group(1)  # type: ignore[union-attr]
    assert [line for line in found.stdout.splitlines() if container_home not in line] == []


def test_metrics_summary_fits_100_columns_one_number_per_line() -> None:
    shown = {"metrics/quality.json": {"data": {"full": {"psnr": 22.4619, "ssim": 0.73}, "unavailable": {"x": "why"}}},
             "metrics/train_full.json": {"data": {"iterations": 150, "mlflow_run_id": "abc", "a" * 120: 1.5}},
             "data/curated/summary.json": {"error": FileNotFoundError("absent")}}
    lines = metrics_table(shown)
    assert all(len(line) <= WIDTH for line in lines)
    assert [line.split() for line in lines[:3]] == [["metrics/quality.json", "full.psnr", "22.46"],
                                                    ["metrics/quality.json", "full.ssim", "0.73"],
                                                    ["metrics/train_full.json", "iterations", "150"]]
    assert lines[3].endswith(" 1.5") and "…" in lines[3]  # a long name keeps its end
    assert lines[4].startswith("data/curated/summary.json: not found")
    assert not any("abc" in line or "why" in line for line in lines)  # text is no metric
