"""The great-expectations suite every clip of the curation scan table must pass.

The suite runs once per curation over the FULL scan table (good and bad
candidates alike), so that great-expectations itself finds the problems; each
failing row is turned into a quarantine reason a person can act on. Uniqueness
failures keep the first row of each group (table order) and quarantine the rest
as duplicates of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.row_conditions import Column

from semivdn.config import Config

# (row, first row of its uniqueness group or None) -> reason shown in quarantine.csv
Reason = Callable[[pd.Series, pd.Series | None], str]
PAIRED_ONLY = Column("source") == "paired"
SOURCES = ("paired", "real")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Check:
    """One expectation plus how to explain a row that fails it."""

    expectation: gxe.Expectation
    reason: Reason
    keep_first: bool = False  # uniqueness: the first row of each group passes

    @property
    def name(self) -> str:
        kwargs = self.expectation.configuration.kwargs
        columns = ", ".join(str(kwargs[key]) for key in ("column", "column_A", "column_B") if key in kwargs)
        scope = " [paired rows]" if self.expectation.row_condition is not None else ""
        return f"{self.expectation.expectation_type}({columns}){scope}"


@dataclass(frozen=True)
class CheckResult:
    name: str
    success: bool
    unexpected: int  # rows that failed before uniqueness groups keep their first row


@dataclass(frozen=True)
class SuiteOutcome:
    success: bool
    reasons: dict[int, list[str]]  # table row index -> distinct reasons it is quarantined, in suite order
    results: list[CheckResult]
    seconds: float  # wall time of context set-up and the one validation run

    def broken(self) -> list[str]:
        return [f"{r.name} ({r.unexpected} rows)" for r in self.results if not r.success]


def _size(row: pd.Series, prefix: str = "") -> str:
    return f"{row[prefix + 'height']}x{row[prefix + 'width']}"


def build_checks(cfg: Config) -> list[Check]:
    """The suite: decodable, well-named, unique, long and large enough, consistent pairs, sane statistics."""
    n_f, side = cfg.data.frames_per_clip, cfg.curate.min_side
    psnr_low, psnr_high = cfg.curate.input_psnr_range

    def between(column: str, low: float | None, high: float | None, reason: Reason, paired: bool = False) -> Check:
        condition = {"row_condition": PAIRED_ONLY} if paired else {}
        return Check(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, **condition),
                     reason)

    def pair_equal(column: str, reason: Reason) -> Check:
        return Check(gxe.ExpectColumnPairValuesToBeEqual(column_A=column, column_B=f"clean_{column}",
                                                         ignore_row_if="either_value_is_missing"), reason)

    return [
        Check(gxe.ExpectColumnValuesToBeNull(column="scan_error"), lambda row, _: str(row["scan_error"])),
        Check(gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(SOURCES)),
              lambda row, _: f"source {row['source']!r} is not one of {list(SOURCES)}"),
        Check(gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
              lambda row, _: f"split {row['split']!r} is not one of {list(SPLITS)}"),
        Check(gxe.ExpectColumnValuesToNotBeNull(column="clean_path", row_condition=PAIRED_ONLY),
              lambda row, _: f"clean counterpart missing: no clip {row['clip']!r} in any of "
                             f"{list(cfg.data.clean_dirs)}"),
        Check(gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
              lambda row, first: f"clip name clash: {first['snowy_path']} has the same clip_id {row['clip_id']}",
              keep_first=True),
        Check(gxe.ExpectColumnValuesToBeUnique(column="content_hash"),
              lambda row, first: f"duplicate of {first['clip_id']}", keep_first=True),
        between("frames", n_f, None, lambda row, _: f"too short: {row['frames']} frames < data.frames_per_clip={n_f}"),
        between("height", side, None, lambda row, _: f"frames too small: {_size(row)} < curate.min_side={side}"),
        between("width", side, None, lambda row, _: f"frames too small: {_size(row)} < curate.min_side={side}"),
        pair_equal("frames", lambda row, _: f"snowy/clean frame count mismatch: {row['frames']} vs "
                                            f"{row['clean_frames']}"),
        pair_equal("height", lambda row, _: f"snowy/clean frame size mismatch: {_size(row)} vs {_size(row, 'clean_')}"),
        pair_equal("width", lambda row, _: f"snowy/clean frame size mismatch: {_size(row)} vs {_size(row, 'clean_')}"),
        between("brightness", 0.0, 1.0, lambda row, _: f"brightness {row['brightness']} outside [0, 1]"),
        between("snow_fraction", 0.0, 1.0, lambda row, _: f"snow_fraction {row['snow_fraction']} outside [0, 1]"),
        between("input_psnr", psnr_low, psnr_high, paired=True,
                reason=lambda row, _: f"input PSNR {row['input_psnr']:.1f} dB outside curate.input_psnr_range="
                                      f"[{psnr_low}, {psnr_high}] (snowy equal to, or unrelated to, clean)"),
    ]


def _failing_rows(check: Check, table: pd.DataFrame, unexpected: Sequence[int]) -> dict[int, str]:
    if not check.keep_first:
        return {int(i): check.reason(table.loc[i], None) for i in unexpected}
    column = check.expectation.configuration.kwargs["column"]
    first_of: dict[object, int] = {}
    reasons = {}
    for i in sorted(int(i) for i in unexpected):
        key = table.at[i, column]
        if key in first_of:
            reasons[i] = check.reason(table.loc[i], table.loc[first_of[key]])
        else:
            first_of[key] = i
    return reasons


def validate(table: pd.DataFrame, checks: Sequence[Check]) -> SuiteOutcome:
    """Run the suite once over ``table`` (RangeIndex) in an ephemeral great-expectations context."""
    if not table.index.equals(pd.RangeIndex(len(table))):
        raise ValueError("the scan table needs a RangeIndex so failing rows map back to clips")
    start = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (context.data_sources.add_pandas("curation").add_dataframe_asset("scan")
                        .add_batch_definition_whole_dataframe("all clips"))
    suite = context.suites.add(gx.ExpectationSuite(name="semivdn-clips", expectations=[c.expectation for c in checks]))
    batch = batch_definition.get_batch(batch_parameters={"dataframe": table})
    validation = batch.validate(suite, result_format="COMPLETE")
    seconds = time.perf_counter() - start

    by_id = {result.expectation_config.id: result for result in validation.results}
    reasons: dict[int, list[str]] = {}
    results = []
    for check in checks:
        result = by_id[check.expectation.id]
        if result.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {check.name} could not run: {result.exception_info['exception_message']}")
        unexpected = result.result.get("unexpected_index_list") or []
        for index, reason in _failing_rows(check, table, unexpected).items():
            if reason not in reasons.setdefault(index, []):
                reasons[index].append(reason)
        results.append(CheckResult(check.name, bool(result.success), len(unexpected)))
    return SuiteOutcome(success=bool(validation.success), reasons=reasons, results=results, seconds=seconds)
