"""``nlhf-zoo convergence``: a thin wrapper running the convergence study of the source tree
(``benchmarks/convergence.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlhf_envs.errors import EnvironmentSetupError


def cmd_convergence(args: argparse.Namespace) -> int:
    """``nlhf-zoo convergence [OPTIONS]``: run the study's own ``main`` on ``args.study_args``; its
    exit status."""
    import runpy

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "convergence.py"
    if not script.is_file():
        raise EnvironmentSetupError(
            "the convergence study is a benchmark of the source tree (benchmarks/convergence.py); "
            "run it from a checkout of nlhf-zoo"
        )
    study = runpy.run_path(str(script), run_name="nlhf_zoo_convergence")
    return int(study["main"](args.study_args))
