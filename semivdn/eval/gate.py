"""The promotion rule: judge a candidate against the champion on the same clips, with uncertainty.

Both models are scored on the same current test data (both domains); their per-clip
tables are compared clip by clip (:func:`semivdn.eval.compare.paired_delta`). The
candidate is promoted only when

1. on the gating metric (``promote.gate``, default ``real_psnr``: PSNR on the proxy-real
   test split) the **lower bound** of the 95 % bootstrap interval of the paired gain
   exceeds ``promote.min_gain``: a candidate equal to the champion plus noise has an
   interval around 0 and never passes, however lucky its mean; and
2. no other tracked metric (each key of ``promote.tolerances``) loses more than its
   tolerance on average (in the metric's own units; "loses" follows ``lower_better``); and
3. do no harm: when the champion leaves snow-free clips alone (meets the bar of
   :mod:`semivdn.eval.harm`), the candidate must too.

A tracked metric that neither side could compute is reported, not held against the
candidate; a gating metric that cannot be computed rejects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from semivdn.config import Config
from semivdn.eval.compare import gain, paired_delta
from semivdn.eval.specs import DECIMALS


@dataclass(frozen=True)
class Decision:
    """The verdict, its reasons (one line per check) and each check's numbers."""

    promoted: bool
    reasons: list[str]
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


def _split_key(key: str) -> tuple[str, str]:
    domain, _, metric = key.partition("_")
    return domain, metric


def judge(candidate: pd.DataFrame, champion: pd.DataFrame, cfg: Config,
          harm: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None)) -> Decision:
    """The rule of the module docstring on two per-clip tables of the same data.

    ``harm``: the candidate's and the champion's do-no-harm reports (an evaluation summary's
    ``do_no_harm``); rule 3 is skipped, and says so, when either is missing.
    """
    rule = cfg.promote
    checks: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    domain, metric = _split_key(rule.gate)
    delta = paired_delta(candidate, champion, domain, metric, cfg)
    if delta is None:
        return Decision(False, [f"{rule.gate}: not computable for both models on this test data; cannot judge"])
    better = gain(delta, metric)
    places = DECIMALS[metric] + 1
    passed = better.low is not None and better.low > rule.min_gain
    checks[rule.gate] = {"role": "gate", **better.to_dict(), "required_low_above": rule.min_gain, "passed": passed}
    bound = "no interval (fewer than 2 clips)" if better.low is None else f"lower bound {better.low:+.{places}f}"
    reasons.append(f"{rule.gate}: gain {better.format(places, signed=True)}, {bound} "
                   f"{'>' if passed else 'not >'} {rule.min_gain} required")
    for key, tolerance in rule.tolerances.items():
        if key == rule.gate:
            continue
        tracked_domain, tracked_metric = _split_key(key)
        tracked = paired_delta(candidate, champion, tracked_domain, tracked_metric, cfg)
        if tracked is None:
            reasons.append(f"{key}: not compared (not computable for both models)")
            continue
        tracked_gain = gain(tracked, tracked_metric)
        within = tracked_gain.mean >= -tolerance
        passed = passed and within
        checks[key] = {"role": "tracked", **tracked_gain.to_dict(), "tolerance": tolerance, "passed": within}
        reasons.append(f"{key}: gain {tracked_gain.format(DECIMALS[tracked_metric] + 1, signed=True)}, "
                       f"{'within' if within else 'drops beyond'} the tolerance {tolerance}")
    harm_check = _harm_check(*harm)
    if harm_check is None:
        reasons.append("do_no_harm: not compared (an evaluation without it)")
    else:
        passed = passed and harm_check["passed"]
        checks["do_no_harm"] = harm_check
        reasons.append(f"do_no_harm: candidate {'meets' if harm_check['candidate_meets_bar'] else 'misses'} the bar "
                       f"(lowest PSNR vs input {harm_check['candidate_min_psnr_vs_input_db']:.1f} dB), champion "
                       f"{'meets' if harm_check['champion_meets_bar'] else 'misses'} it"
                       + ("" if harm_check["passed"] else ": a regression"))
    return Decision(passed, reasons, checks)


def _harm_check(candidate: dict[str, Any] | None, champion: dict[str, Any] | None) -> dict[str, Any] | None:
    if candidate is None or champion is None:
        return None
    return {"role": "tracked", "candidate_meets_bar": candidate["meets_bar"],
            "champion_meets_bar": champion["meets_bar"],
            "candidate_min_psnr_vs_input_db": candidate["min_psnr_vs_input_db"],
            "champion_min_psnr_vs_input_db": champion["min_psnr_vs_input_db"],
            "passed": bool(candidate["meets_bar"] or not champion["meets_bar"])}
