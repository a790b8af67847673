"""``semivdn <command>``: one door onto every step. This module only parses arguments;
each command calls one library function (DVC stages and Kubeflow components call the
same commands). Heavy modules are imported inside the handlers so ``--help`` is fast.
The Kubeflow pipeline has its own door, ``semivdn-pipeline`` (pipelines/cli.py):
the library never imports the layers built on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from semivdn.config import DEFAULT_PARAMS, PROFILES, Config, ConfigError, config_from_dict, load_config

Handler = Callable[[argparse.Namespace, Config], Any]


def _params(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.config import write_resolved

    return write_resolved(cfg, Path(args.out))


def _metrics(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.summary import print_summary

    print_summary(Path(args.root))


def _data_make(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.data.make import make_dataset

    return make_dataset(cfg, Path(args.out or cfg.paths.raw), Path(args.truth or cfg.paths.real_truth))


def _data_curate(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.data.curate import curate

    footage = None if args.footage == "none" else Path(args.footage or cfg.paths.footage)
    if args.footage is None and not footage.is_dir():
        logging.getLogger(__name__).info("no footage folder at %s (paths.footage): curating the raw data only",
                                         footage)
        footage = None
    return curate(cfg, Path(args.raw or cfg.paths.raw), Path(args.out or cfg.paths.curated), footage)


def _data_remote(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.versioning import configure_remote

    return configure_remote(cfg, Path(args.root), local=args.local)


def _footage_ingest(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.footage import add_footage

    return add_footage(cfg, args.source or cfg.pipeline.footage_uri, Path(args.store or cfg.paths.footage))


def _footage_check(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.footage import decide

    return decide(cfg, args.footage or cfg.paths.footage)


def _footage_fingerprint(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn import storage
    from semivdn.footage import data_fingerprint

    return {"data_fingerprint": data_fingerprint(args.raw, args.footage, storage.endpoint_url(cfg))}


def _footage_stage(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.footage import stage_footage

    return stage_footage(cfg, args.footage, args.raw, Path(args.out))


def _footage_record(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.footage import record_fingerprint

    return record_fingerprint(cfg, args.version, args.fingerprint)


def _train(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.train import run_training

    return run_training(cfg, args.variant, raw_root=Path(args.raw or cfg.paths.raw),
                        curated=Path(args.curated or cfg.paths.curated),
                        out_dir=Path(args.out or Path(cfg.paths.models) / args.variant),
                        resume=args.resume, init=args.init, metrics_path=args.metrics, curve_path=args.curve)


def _evaluate(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.eval.evaluate import evaluate

    return evaluate(cfg, model_ref=args.model, name=args.name, split=args.split,
                    raw_root=Path(args.raw or cfg.paths.raw), curated=Path(args.curated or cfg.paths.curated),
                    out_dir=Path(args.out), truth_root=Path(args.truth or cfg.paths.real_truth))


def _report(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.eval.report import build_report

    return build_report(cfg, eval_dirs=[Path(p) for p in args.evals], out_dir=Path(args.out or cfg.paths.reports),
                        quality_json=Path(args.quality or Path(cfg.paths.metrics) / "quality.json"))


def _register(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.registry import register_model, seed_champion

    if args.first_champion:
        return seed_champion(cfg, Path(args.model), args.variant, Path(args.eval) if args.eval else None)
    return register_model(cfg, checkpoint=Path(args.model), variant=args.variant,
                          eval_dir=Path(args.eval) if args.eval else None, alias=args.alias)


def _promote(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.promotion import promote_on_test_data

    return promote_on_test_data(cfg, raw_root=Path(args.raw or cfg.paths.raw),
                                curated=Path(args.curated or cfg.paths.curated),
                                truth_root=Path(args.truth or cfg.paths.real_truth),
                                out_dir=Path(args.out or Path(cfg.paths.reports) / "promotion"),
                                version=args.version, force=args.version is not None)


def _figure(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.eval.figure import median_figure

    return median_figure(Path(args.eval), args.domains, Path(args.out))


def _release(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.release import ASSETS
    from semivdn.release_build import build_release

    return build_release(Path(args.model), [[Path(p) for p in member] for member in args.train_metrics],
                         [Path(p) for p in args.evals],
                         cfg, out_dir=Path(args.out) if args.out else ASSETS, card=Path(args.card))


def _ensemble(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.models.checkpoint import assemble_ensemble

    return {"checkpoint": str(assemble_ensemble([Path(p) for p in args.members], Path(args.out))),
            "members": args.members}


def _desnow(args: argparse.Namespace, cfg: Config) -> Any:
    from semivdn.inference import desnow_video
    from semivdn.registry import default_model_ref

    if args.snow_gate is not None:  # the flag wins over params (inference.snow_gate.enabled)
        gate = dataclasses.replace(cfg.inference.snow_gate, enabled=args.snow_gate)
        cfg = dataclasses.replace(cfg, inference=dataclasses.replace(cfg.inference, snow_gate=gate))
    return desnow_video(cfg, args.input, args.output, model_ref=args.model or default_model_ref(cfg),
                        device=args.device,
                        tile=args.tile if args.tile is not None else cfg.inference.tile, compare=args.compare,
                        overwrite=args.overwrite)


def add_common(parser: argparse.ArgumentParser) -> None:
    """The options every command takes (``semivdn-pipeline`` shares them)."""
    parser.add_argument("--params", default=str(DEFAULT_PARAMS),
                        help="params file (default: params.yaml; `desnow` uses built-in defaults where there is none)")
    parser.add_argument("--profile", choices=PROFILES, help="profile overriding params.yaml and $SEMIVDN_PROFILE")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one param after the profile, e.g. --set train.batch_size=16 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semivdn", description="Semi-supervised video desnowing (SemiVDN).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str,
                parent: argparse._SubParsersAction = commands) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        add_common(sub)
        sub.set_defaults(handler=handler)
        return sub

    par = command("params", _params, "write the params with the profile applied (what the DVC stages read)")
    par.add_argument("--out", required=True, help="resolved params file")
    met = command("metrics", _metrics, "the DVC metrics of the workspace as a readable table")
    met.add_argument("--root", default=".", help="DVC repository (default: here)")

    data = commands.add_parser("data", help="make the embedded default data; curate raw data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="STEP")
    make = command("make", _data_make, "write the embedded paired synthetic set and the real stand-in set",
                   data_commands)
    make.add_argument("--out", help="output root (default: paths.raw)")
    make.add_argument("--truth", help="where the proxy-real clean frames go, outside --out; evaluation only "
                      "(default: paths.real_truth)")
    cur = command("curate", _data_curate, "scan, validate and quarantine raw data into a manifest", data_commands)
    cur.add_argument("--raw", help="raw data root (default: paths.raw)")
    cur.add_argument("--out", help="output folder (default: paths.curated)")
    cur.add_argument("--footage", help="your real footage, joining the real train split (default: paths.footage "
                     "when it exists; 'none': without)")
    rem = command("remote", _data_remote, "make S3 (params s3:, or $SEMIVDN_S3_*) the default DVC remote",
                  data_commands)
    rem.add_argument("--root", default=".", help="DVC repository (default: here)")
    rem.add_argument("--local", action="store_true", help="write .dvc/config.local (this clone only)")

    footage = commands.add_parser("footage", help="add real footage (a new DVC version); the retraining sensor")
    footage_commands = footage.add_subparsers(dest="footage_command", required=True, metavar="STEP")
    ing = command("ingest", _footage_ingest, "add new clips to the footage folder (never overwriting) and dvc add it",
                  footage_commands)
    ing.add_argument("--source", help="where new clips land: folder or s3:// (default: pipeline.footage_uri)")
    ing.add_argument("--store", help="the DVC-tracked footage folder (default: paths.footage)")
    chk = command("check", _footage_check, "sweep, retrain or skip: has the footage changed since the champion?",
                  footage_commands)
    chk.add_argument("--footage", help="footage folder or s3:// (default: paths.footage)")
    fpr = command("fingerprint", _footage_fingerprint, "content hash of the raw data and the footage (a pipeline "
                  "run's cache key)", footage_commands)
    fpr.add_argument("--raw", required=True, help="raw data: folder or s3://")
    fpr.add_argument("--footage", required=True, help="footage: folder or s3://")
    stg = command("stage", _footage_stage, "copy the raw data plus the footage into one folder (a pipeline step)",
                  footage_commands)
    stg.add_argument("--raw", required=True, help="raw data: folder or s3://")
    stg.add_argument("--footage", required=True, help="footage: folder or s3://")
    stg.add_argument("--out", required=True, help="the folder to fill")
    rec = command("record", _footage_record, "tag a registered model version with the footage it was trained on",
                  footage_commands)
    rec.add_argument("--version", required=True, help="model version")
    rec.add_argument("--fingerprint", required=True, help="footage fingerprint (`semivdn footage check`)")

    train = command("train", _train, "train one variant (M1, M2, M3, full) with MLflow tracking")
    train.add_argument("--variant", required=True, help="a key of params.yaml variants")
    train.add_argument("--raw", help="raw data root (default: paths.raw)")
    train.add_argument("--curated", help="curated folder with manifest.parquet (default: paths.curated)")
    train.add_argument("--out", help="checkpoint folder (default: paths.models/VARIANT)")
    train.add_argument("--init", help="initial weights: a checkpoint, models:/NAME@ALIAS, or none "
                       "(default: the checkpoint of the variant's `init` in params)")
    train.add_argument("--metrics", help="write the final training metrics JSON here")
    train.add_argument("--curve", help="loss curve CSV for `dvc plots` (default: OUT/curve.csv)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")

    ev = command("evaluate", _evaluate, "PSNR/SSIM/LPIPS with 95%% intervals on paired clips and on real clips "
                 "with held-back truth; NIQE/NIMA/MUSIQ on real clips")
    ev.add_argument("--model", required=True, help="checkpoint path, models:/NAME@ALIAS, or 'input'/'median3'")
    ev.add_argument("--name", help="row name in reports (default: derived from --model)")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument("--raw", help="raw data root (default: paths.raw)")
    ev.add_argument("--curated", help="curated folder (default: paths.curated)")
    ev.add_argument("--truth", help="held-back clean frames of the real clips (default: paths.real_truth)")
    ev.add_argument("--out", required=True, help="output folder for the CSV, JSON and image grids")

    rep = command("report", _report, "the ablation report (paper Table 2 layout) as Markdown and HTML")
    rep.add_argument("evals", nargs="+", help="evaluation output folders")
    rep.add_argument("--out", help="report folder (default: paths.reports)")
    rep.add_argument("--quality", help="metrics JSON (default: paths.metrics/quality.json)")

    reg = command("register", _register, "register a trained model in the MLflow registry")
    reg.add_argument("--model", required=True, help="checkpoint path")
    reg.add_argument("--variant", required=True)
    reg.add_argument("--eval", help="evaluation folder whose metrics become tags")
    reg.add_argument("--alias", default="candidate")
    reg.add_argument("--first-champion", action="store_true",
                     help="make it the champion if the registry has none; else do nothing (seeds the registry)")

    pro = command("promote", _promote, "re-score candidate and champion on the current test data; move `champion` "
                  "only if the lower bound of the paired gain on promote.gate clears promote.min_gain")
    pro.add_argument("--version", type=int, help="force this version to champion (rollback)")
    pro.add_argument("--raw", help="raw data root (default: paths.raw)")
    pro.add_argument("--curated", help="curated folder (default: paths.curated)")
    pro.add_argument("--truth", help="held-back clean frames of the real clips (default: paths.real_truth)")
    pro.add_argument("--out", help="where both evaluations go (default: paths.reports/promotion)")

    fig = command("figure", _figure, "the README picture: each domain's median-PSNR test clip, input | model | truth")
    fig.add_argument("--eval", required=True, help="`semivdn evaluate` folder of the model to show")
    fig.add_argument("--domains", nargs="+", default=["real", "paired"], choices=("real", "paired"))
    fig.add_argument("--out", required=True, help="PNG to write")

    ens = command("ensemble", _ensemble, "average the outputs of trained checkpoints of one architecture: "
                  "one checkpoint that evaluates, registers, ships and desnows like a single network")
    ens.add_argument("--members", nargs="+", required=True, help="two or more trained checkpoints")
    ens.add_argument("--out", required=True, help="the ensemble checkpoint to write")

    rel = command("release", _release, "ship a trained checkpoint as the release model, with manifest and model card")
    rel.add_argument("--model", required=True, help="the trained checkpoint to ship")
    rel.add_argument("--train-metrics", nargs="+", required=True, action="append",
                     help="`semivdn train --metrics` files of the stages that made it, in order; given once per "
                     "network, in order, for an ensemble")
    rel.add_argument("--evals", nargs="+", required=True, help="`semivdn evaluate` folders the card reports")
    rel.add_argument("--out", help="assets folder (default: the package's semivdn/assets)")
    rel.add_argument("--card", default="MODEL_CARD.md", help="model card to write")

    des = command("desnow", _desnow, "desnow a video file or frame folder")
    des.add_argument("input")
    des.add_argument("-o", "--output", required=True, help="output video file or frame folder")
    des.add_argument("--model", help="checkpoint path, models:/NAME@ALIAS or 'release' (default: the registry's "
                     "champion, else the shipped release model)")
    des.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    des.add_argument("--tile", type=int, help="tile size in pixels (0: whole frames)")
    des.add_argument("--compare", action="store_true", help="write input and output side by side")
    des.add_argument("--overwrite", action="store_true", help="replace an existing output file or non-empty folder")
    des.set_defaults(runs_without_project=True)  # desnowing a video needs no params.yaml: defaults serve
    des.add_argument("--snow-gate", action=argparse.BooleanOptionalAction, default=None,
                     help="scale the network's change by the snow each frame shows, so footage without snow "
                     "comes out unchanged (default: params inference.snow_gate.enabled)")
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _expected(exc: Exception) -> bool:
    """A failure the user can act on (I/O, bad input, video, checkpoint, registry), not a bug."""
    from mlflow.exceptions import MlflowException  # only imported when something failed

    return isinstance(exc, OSError | ValueError | RuntimeError | MlflowException)


def _config(args: argparse.Namespace) -> Config:
    """The params of ``args``; a command that needs no project (``desnow``) run where there is no
    params.yaml, and given none, gets the built-in defaults instead of an error."""
    if (getattr(args, "runs_without_project", False) and args.params == str(DEFAULT_PARAMS)
            and not DEFAULT_PARAMS.is_file()):
        logging.getLogger(__name__).info("no %s in %s: built-in defaults", DEFAULT_PARAMS, Path.cwd())
        return config_from_dict({}, args.profile, args.overrides)
    return load_config(args.params, args.profile, args.overrides)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, load the config, call the chosen handler and print its result; the exit code.

    The one error boundary, shared by ``semivdn`` and ``semivdn-pipeline`` (pipelines/cli.py):
    every expected failure is one line on stderr and an exit code: 1 failed (I/O, bad input,
    video, checkpoint, registry), 2 invalid params or arguments, 130 interrupted. Unexpected
    exceptions (bugs) keep their traceback.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        cfg = _config(args)
        result = args.handler(args, cfg)
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            result = dataclasses.asdict(result)
        if isinstance(result, dict):
            print(json.dumps(result, indent=2, default=str, allow_nan=False))
    except KeyboardInterrupt:
        print("semivdn: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"semivdn: invalid params: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _expected(exc):
            raise
        logging.getLogger(__name__).debug("details", exc_info=True)
        print(f"semivdn: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
