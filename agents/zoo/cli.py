"""The ``nlhf-zoo`` command-line tool (rl-baselines3-zoo style).

Subcommands:

* ``list``: registered environment ids, game families, agents and zoo configs;
* ``train --agent A --env ID [--params k:v ...] [--seed] [--device] [--log-folder] [--tensorboard-log]``:
  trains from ``zoo_configs/<agent>.yml`` into ``<log-folder>/<agent>/<EnvName>_<n>/`` (resolved
  ``config.yml``, ``args.yml``, ``checkpoints/``, ``final.npz``, ``metrics.csv``, TensorBoard events);
  ``train --resume RUN_DIR`` continues a run to its budget, bit for bit;
* ``eval``: a saved agent against ``pi_ref`` (or another saved agent): win rate with a 95% interval,
  exact exploitability on matrix games;
* ``tournament``: round robin among participants (saved agents, train runs, ``pi_ref``, ``uniform``,
  ``zoo:AGENT`` trained on the spot), optionally on Ray (``--ray [--address]``);
* ``plot``: a metric against preference queries for the runs of a log folder;
* ``convergence``: the convergence study of the tabular agents (``benchmarks/convergence.py`` of
  the source tree; this command is a thin wrapper that runs it);
* ``demo``: the README's main job: solve the built-in games, train the main agents on a default
  game, run a tournament, print the tables and write the plots.

A user's mistake (unknown agent or id, a config typo, a missing file: any
:class:`nlhf_envs.errors.NlhfError`) prints one line ``nlhf-zoo: error: ...`` on stderr and exits
with status 2 (``--debug`` shows the traceback); nothing is written before the arguments are
validated. A full disk is one line as well (what was saved stays whole: every file is written
atomically). Any other exception is a bug and keeps its traceback. Ctrl-C exits with status 130.

This module only parses the command line (:func:`build_parser`, :func:`main` and the small option
helpers); each command's logic lives in its own module, usable without the parser:
:mod:`agents.zoo.train` (runs, resume, evaluation files), :mod:`agents.zoo.participants` and
:mod:`agents.zoo.tournament` (``eval`` and ``tournament``), :mod:`agents.zoo.plotting`,
:mod:`agents.zoo.demo`, :mod:`agents.zoo.listing`, :mod:`agents.zoo.export`,
:mod:`agents.zoo.convergence` and :mod:`agents.zoo.tune`; :mod:`agents.zoo.common` holds what
they share. The names below are re-exported from there.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable

from agents.arena.match import MAX_DUELS
from agents.zoo.common import (
    MAX_SEED,
    UserError,
    check_device,
    env_folder_name,
    next_run_dir,
    read_metrics_csv,
    write_metrics_csv,
)
from agents.zoo.convergence import cmd_convergence as _cmd_convergence
from agents.zoo.demo import DEMO_AGENTS, DEMO_ENV
from agents.zoo.demo import cmd_demo as _cmd_demo
from agents.zoo.export import cmd_export as _cmd_export
from agents.zoo.listing import cmd_list as _cmd_list
from agents.zoo.plotting import cmd_plot as _cmd_plot
from agents.zoo.plotting import plot_runs
from agents.zoo.tournament import cmd_eval as _cmd_eval
from agents.zoo.tournament import cmd_tournament as _cmd_tournament
from agents.zoo.train import (
    HISTORY_DIGEST_KEY,
    Evaluations,
    PeerStopped,
    TrainingInterrupted,
    check_query_budget,
    launch_processes,
    train_run,
)
from agents.zoo.train import cmd_train as _cmd_train
from nlhf_envs.errors import NlhfError

__all__ = [
    "main",
    "build_parser",
    "UserError",
    "TrainingInterrupted",
    "train_run",
    "check_device",
    "check_query_budget",
    "torch_threads",
    "DEFAULT_TORCH_THREADS",
    "MAX_SEED",
    "MAX_DUELS",
    "DEMO_ENV",
    "DEMO_AGENTS",
    "HISTORY_DIGEST_KEY",
    "Evaluations",
    "env_folder_name",
    "next_run_dir",
    "read_metrics_csv",
    "write_metrics_csv",
    "plot_runs",
]


#: torch CPU threads of ``train``, ``eval`` and ``tournament`` unless ``--threads`` (or
#: ``OMP_NUM_THREADS``) says otherwise: the zoo's networks are tiny, and extra threads only add
#: synchronisation (a 5-agent token tournament on 2 cores: see ``--threads``).
DEFAULT_TORCH_THREADS = 1

THREADS_HELP = (
    "torch CPU threads (default: 1, or $OMP_NUM_THREADS when set); the zoo's networks are tiny, "
    "so more threads rarely help and oversubscribe shared machines"
)


def _add_trust_pickle_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load SB3 .zip models with SB3's own loader, which unpickles them and so runs any "
        "code they hold (only for files you trust; default: rebuilt from plain data, no code runs)",
    )


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def torch_threads(threads: int | None) -> int:
    """The torch CPU thread count a command runs with: ``threads`` (``>= 1``) when given, else
    ``$OMP_NUM_THREADS`` when it is set to a positive integer, else :data:`DEFAULT_TORCH_THREADS`.

    Raises:
        UserError: for ``threads < 1``.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserError(f"--threads must be an integer >= 1; got {threads!r}")
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) >= 1 else DEFAULT_TORCH_THREADS


def _set_torch_threads(n: int) -> None:
    """Run torch on ``n`` CPU threads: now if torch is imported, else when it is (torch reads
    ``OMP_NUM_THREADS`` at import; numpy-only commands never pay for importing torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


def _cmd_tune(args: argparse.Namespace) -> int:
    from agents.zoo.tune import cmd_tune

    return cmd_tune(args)


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nlhf-zoo`` (one subparser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog="nlhf-zoo",
        description="Nash learning from human feedback: games, agents, tournaments.",
    )
    from nlhf_envs import __version__

    parser.add_argument("--version", action="version", version=f"nlhf-zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, fn: Callable[[argparse.Namespace], int]):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        p.add_argument(
            "--debug", action="store_true", help="show the traceback of nlhf-zoo's own errors too"
        )
        return p

    p = add("list", "list environment ids, game families, agents and zoo configs", _cmd_list)
    p.add_argument("--conf-dir", default=None, help="folder of the zoo YAML files")

    p = add("train", "train an agent from its zoo config", _cmd_train)
    p.epilog = (
        "With --resume RUN_DIR the run continues from its most advanced valid state (a damaged "
        "newest checkpoint falls back to an older one, said on stderr) and nothing changes it "
        "silently: -n is applied as the run's new total query budget (recorded in config.yml and "
        "said on stderr); --save-freq and --eval-freq default to the recorded values (a new value "
        "is recorded and said); --seed, --params, --env-kwargs, --device and --tensorboard-log "
        "must equal the recorded run's or are refused; --log-folder and --conf-dir are refused. "
        "One train at a time holds a run folder (a second is refused). Ctrl-C or SIGTERM stops at "
        "the next iteration boundary with a resumable final.npz."
    )
    p.add_argument("--agent", default=None, help="agent name (see `nlhf-zoo list`); required")
    p.add_argument("--env", default=None, help="environment id, e.g. nlhf/RPS-v0; required")
    p.add_argument(
        "--resume",
        "--trained-agent",
        dest="resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a train run folder from its latest valid checkpoint or final.npz to its "
        "budget (see below for the options it accepts)",
    )
    p.add_argument(
        "--params",
        nargs="*",
        default=[],
        metavar="KEY:VALUE",
        help="config overrides (with --resume: refused unless equal to the run's)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed (default 0; with --resume: must be the run's)"
    )
    p.add_argument("--device", default=None, help="torch device for neural agents (cpu, cuda)")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train ONE run on N processes: relaunches this command under `torchrun --standalone "
        "--nproc_per_node N` (gloo on CPUs, one GPU per process with --device cuda); the same "
        "as launching it with torchrun yourself",
    )
    p.add_argument("--log-folder", default=None, help="root of the run folders (default: logs)")
    p.add_argument("--tensorboard-log", default=None, help="TensorBoard folder (default: <run>/tb)")
    p.add_argument(
        "-n",
        "--num-queries",
        type=int,
        default=None,
        help="override the query budget (with --resume: the run's new total budget)",
    )
    p.add_argument(
        "--save-freq",
        type=int,
        default=None,
        help="checkpoint every N >= 1 iterations (default: off; with --resume: the recorded one)",
    )
    p.add_argument(
        "--eval-freq",
        type=int,
        default=None,
        help="evaluate every N >= 1 iterations into evaluations.npz and keep best_model.npz "
        "(with --resume: default the recorded one)",
    )
    p.add_argument(
        "--env-kwargs",
        nargs="*",
        default=[],
        metavar="KEY:VALUE",
        help="environment keyword arguments (merged over the zoo entry's env_kwargs)",
    )
    p.add_argument(
        "--conf-dir",
        default=None,
        help="folder of the zoo YAML files (must exist; not with --resume)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads_option(p)

    p = add("tune", "tune an agent's settings with Optuna (TPE sampler, median pruner)", _cmd_tune)
    from agents.zoo.tune import add_arguments as _tune_arguments

    _tune_arguments(p)

    p = add("eval", "evaluate a saved agent against pi_ref or another agent", _cmd_eval)
    p.add_argument("agent_path", help="checkpoint file or train run folder")
    p.add_argument(
        "--opponent", default="pi_ref", help="pi_ref, uniform or a checkpoint/run folder"
    )
    p.add_argument("--env", default=None, help="environment id (default: the agent's own game)")
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    p.add_argument("--n-duels", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--no-progress", action="store_true")
    _add_threads_option(p)
    _add_trust_pickle_option(p)

    p = add("tournament", "round-robin tournament among participants", _cmd_tournament)
    p.add_argument(
        "participants",
        nargs="+",
        metavar="[NAME=]SPEC",
        help="pi_ref, uniform, zoo:AGENT (trained now), a probability vector (0.2,0.3,0.5), a "
        "checkpoint file, a train run folder or an SB3 model (.zip; PPO, A2C or DQN)",
    )
    p.add_argument(
        "--env",
        default=None,
        help="environment id (default: the game the participants were trained on, else nlhf/RPS-v0)",
    )
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    p.add_argument("--n-duels", type=int, default=500, help="duels per pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-queries", type=int, default=None, help="budget of zoo:AGENT entries")
    p.add_argument("--output-dir", default=None, help="default: <log-folder>/tournaments/<Env>_<n>")
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--no-resume", action="store_true", help="replay matches already in output-dir")
    p.add_argument("--ray", action="store_true", help="distribute matches over a Ray cluster")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local cluster)")
    p.add_argument("--no-progress", action="store_true")
    _add_threads_option(p)
    _add_trust_pickle_option(p)

    p = add(
        "export",
        "write a Hugging Face run's policy as a plain model folder (LoRA merged into its base)",
        _cmd_export,
    )
    p.add_argument("run", help="a train run folder on nlhf/HFTokenDuel-v0")
    p.add_argument("out", help="a new folder for the model and its tokenizer")

    p = add(
        "plot", "plot a metric against preference queries for the runs of a log folder", _cmd_plot
    )
    p.add_argument("--env", required=True)
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--agents", nargs="*", default=None)
    p.add_argument(
        "--metric",
        default=None,
        help="default: game/exploitability (matrix games), eval/exploitability (token duel)",
    )
    p.add_argument(
        "--out", default=None, help="PNG path (default: <log-folder>/<Env>_<metric>.png)"
    )

    p = add(
        "convergence",
        "the convergence study: queries to reach pi*_beta per agent (`convergence --help`)",
        _cmd_convergence,
    )
    p.add_argument("study_args", nargs=argparse.REMAINDER, help="options of the study")

    p = add("demo", "the main job: solve games, train the main agents, run a tournament", _cmd_demo)
    p.add_argument("--exact-queries", type=int, default=300, help="budget per agent, exact oracle")
    p.add_argument("--num-queries", type=int, default=1_000_000, help="budget per agent, sampled")
    p.add_argument("--n-duels", type=int, default=2000, help="duels per pair in the tournament")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="demo_output")
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nlhf-zoo`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convergence"]:  # the study parses its own options (and --help)
        args = argparse.Namespace(func=_cmd_convergence, study_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    saved = _ThreadState() if hasattr(args, "threads") else None
    try:
        if saved is not None:
            _set_torch_threads(torch_threads(args.threads))
        if getattr(args, "nproc", None) is not None:  # train --nproc N: relaunched by torchrun
            status = launch_processes(argv, args.nproc)
            if status is not None:
                return status
        return int(args.func(args) or 0)
    except NlhfError as exc:  # a user's mistake, named by the library: one line
        if getattr(args, "debug", False):
            raise
        if isinstance(exc, PeerStopped):  # the first process says it and sets the status; a
            return 0  # success here lets torchrun wait for it instead of stopping it at once
        print(f"nlhf-zoo: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk is the machine's state, not a bug
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or getattr(args, "debug", False):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(
            f"nlhf-zoo: error: no space left on the device{where} ({exc.strerror}); nothing saved "
            "before was changed: free some space and run the command again (train --resume RUN "
            "continues a run)",
            file=sys.stderr,
        )
        return 2
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun: the first process says it
            print(f"nlhf-zoo: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("nlhf-zoo: interrupted", file=sys.stderr)
        return 130
    finally:
        if saved is not None:
            saved.restore()


class _ThreadState:
    """The caller's ``OMP_NUM_THREADS`` and torch thread count, restored after an in-process
    command (tests and notebooks call :func:`main`)."""

    def __init__(self) -> None:
        self.env = os.environ.get("OMP_NUM_THREADS")
        torch = sys.modules.get("torch")
        self.torch = torch.get_num_threads() if torch is not None else None

    def restore(self) -> None:
        if self.env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = self.env
        torch = sys.modules.get("torch")
        if torch is not None and self.torch is not None:
            torch.set_num_threads(self.torch)


if __name__ == "__main__":
    sys.exit(main())
