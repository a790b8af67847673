"""Turn the step functions into lightweight Kubeflow components on the project image.

The image (``pipeline.image``) has ``semivdn``, ``components`` and kfp installed,
so nothing is pip-installed at run time; the same components run on a cluster and
with ``kfp.local``'s SubprocessRunner in the current environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

from components.data import curate_data
from components.evaluation import ablation_report, evaluate_model
from components.footage import fingerprint_data, footage_sensor, ingest_footage
from components.registry import promote_candidate, register_candidate
from components.training import train_variant


@dataclass(frozen=True)
class Components:
    footage_sensor: PythonComponent
    fingerprint_data: PythonComponent
    ingest_footage: PythonComponent
    curate_data: PythonComponent
    train_variant: PythonComponent
    evaluate_model: PythonComponent
    ablation_report: PythonComponent
    register_candidate: PythonComponent
    promote_candidate: PythonComponent


def build_components(image: str) -> Components:
    """Every step as a component running on ``image`` (params: ``pipeline.image``)."""
    steps = (footage_sensor, fingerprint_data, ingest_footage, curate_data, train_variant, evaluate_model,
             ablation_report, register_candidate, promote_candidate)
    return Components(**{step.__name__: dsl.component(step, base_image=image, install_kfp_package=False)
                         for step in steps})
