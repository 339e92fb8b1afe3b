"""``nlhf-zoo tournament`` and ``nlhf-zoo eval`` on parsed arguments: resolve the
participants (:mod:`agents.zoo.participants`), play them (:func:`agents.arena.run`) and print the
tables."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from agents.arena.match import MAX_DUELS
from agents.zoo.common import (
    MAX_SEED,
    UserError,
    _check_count,
    _check_folder,
    _threads_note,
    env_folder_name,
)
from agents.zoo.participants import _match_env, _resolve_participant, check_paths


def cmd_tournament(args: argparse.Namespace) -> int:
    """``nlhf-zoo tournament``: play the participants round robin, print and write the
    results; ``0``."""
    from agents import arena
    from agents.zoo import configs as zoo
    from agents.zoo.runs import make_run_dir

    env_kwargs = zoo.parse_params(args.env_kwargs)
    _check_count("--n-duels", args.n_duels, 1, MAX_DUELS)
    _check_count("--seed", args.seed, 0, MAX_SEED)
    _check_folder("--output-dir", args.output_dir)
    _check_folder("--log-folder", args.log_folder)
    if args.ray:  # before any participant is trained or loaded
        from agents.arena.distributed import RAY_MISSING, require_ray

        try:
            require_ray()
        except ImportError:
            raise UserError(f"--ray: {RAY_MISSING}") from None
    check_paths(list(args.participants), args.env, env_kwargs)  # before loading anything
    resolved = [_resolve_participant(s, args.env, args) for s in args.participants]
    parts = arena.unique_names([(n, o) for n, o, _ in resolved])
    env_id, env_kwargs = _match_env(parts, [r for _, _, r in resolved], args.env, env_kwargs)
    # the environment (its reference model and judge) is built once, here, and every match is
    # played in it
    env = arena.validate(parts, env_id, env_kwargs=env_kwargs, num_duels=args.n_duels)
    # everything is valid: now (and only now) the output folder is created
    out = (
        Path(args.output_dir)
        if args.output_dir
        else make_run_dir(Path(args.log_folder) / "tournaments", env_folder_name(env_id))
    )
    n = len(parts)
    played = []
    start = time.perf_counter()

    def on_match(r: Any) -> None:
        played.append(r)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", arena.IntransitivityWarning)
        warnings.simplefilter("always", arena.MatchLogWarning)
        result = arena.run(
            parts,
            env_id,
            env_kwargs=env_kwargs,
            num_duels=args.n_duels,
            seed=args.seed,
            out_dir=out,
            resume=not args.no_resume,
            use_ray=args.ray,
            ray_address=args.address,
            on_match=on_match,
            env_instance=env,
            progress=not args.no_progress,
        )
    print(f"tournament on {env_id}:\n")
    print(result.to_markdown())
    for w in caught:
        if issubclass(w.category, (arena.IntransitivityWarning, arena.MatchLogWarning)):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"\nwritten to {out}/ (tournament.md, win_rates.csv, tournament.json, heatmap.png)")
    total = n * (n - 1) // 2
    print(
        f"{len(played)} of {total} matches played, {total - len(played)} reused from "
        f"{out / 'matches.jsonl'}; {time.perf_counter() - start:.1f} s{_threads_note()}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``nlhf-zoo eval``: win rate of a saved agent against ``args.opponent`` (and a token
    agent's Nash metrics); ``0``."""
    from agents import arena
    from agents.zoo.configs import parse_params

    _check_count("--n-duels", args.n_duels, 1, MAX_DUELS)
    _check_count("--seed", args.seed, 0, MAX_SEED)
    env_kwargs = parse_params(getattr(args, "env_kwargs", None))
    specs = [f"agent={args.agent_path}", f"opponent={args.opponent}"]
    check_paths(specs, args.env, env_kwargs)  # before loading anything
    start = time.perf_counter()
    me = _resolve_participant(specs[0], args.env, args)
    if getattr(me[1], "kind", "") == "text":
        _print_text_eval(me[1], args)
        if args.opponent == "pi_ref":
            print(f"evaluated in {time.perf_counter() - start:.1f} s{_threads_note()}")
            return 0
    opp = _resolve_participant(specs[1], args.env, args)
    parts = [(me[0], me[1]), (opp[0], opp[1])]
    env_id, env_kwargs = _match_env(parts, [me[2], opp[2]], args.env, env_kwargs)
    # a Hugging Face run's agent holds the env its config.yml builds: played, not built again
    hf_agent = getattr(getattr(me[1], "backend", None), "kind", "native") != "native"
    same = me[2] is not None and (env_id, env_kwargs) == (me[2][0], dict(me[2][1]))
    result = arena.run(
        parts, env_id, env_kwargs=env_kwargs, num_duels=args.n_duels, seed=args.seed,
        progress=not args.no_progress, env_instance=me[1].env if hf_agent and same else None,
    )  # fmt: skip
    lo, hi = result.ci_low[0, 1], result.ci_high[0, 1]
    print(
        f"win rate of {args.agent_path} vs {args.opponent} on {env_id}: "
        f"{result.win_rate[0, 1]:.4f} (95% CI [{lo:.4f}, {hi:.4f}], {args.n_duels} duels)"
    )
    match = result.matches[0] if result.matches else None
    if match is not None and match.mean_true_prob == match.mean_true_prob:  # the token duel
        # a match reports from its first seat's view (the participant whose name sorts first)
        judge, truth = match.mean_prob, match.mean_true_prob
        if match.i != 0:
            judge, truth = 1.0 - judge, 1.0 - truth
        print(
            f"mean P(agent's answer preferred): {judge:.4f} under the judge, "
            f"{truth:.4f} under the ground truth"
        )
    if result.exploitability[0] is not None:
        print(f"exact exploitability Expl_beta = {result.exploitability[0]:.6g}")
    print(f"evaluated in {time.perf_counter() - start:.1f} s{_threads_note()}")
    return 0


def _print_text_eval(agent: Any, args: argparse.Namespace) -> None:
    """Win rates against pi_ref (judge and ground truth) and the Nash metrics of a token agent.

    ``--n-duels`` answer pairs are evaluated on prompts drawn with replacement from the world's
    held-out split (:meth:`agents.text.common.TextAgent.evaluate`); the line names that split and
    how many distinct prompts it holds. Each win rate is the mean of the pairs' preference
    probabilities ``P(y > y_ref | x)``, values in ``[0, 1]`` whose variance is at most
    ``p (1 - p)``, so the 95% Wilson interval of a binomial proportion
    (:func:`agents.arena.stats.wilson_interval`) covers it (conservatively).
    """
    from agents.arena.stats import wilson_interval

    split = "heldout"
    n = int(args.n_duels)
    m = agent.evaluate(num_prompts=n, split=split, progress=not args.no_progress)
    hf = agent.backend.kind != "native"
    env_id = "nlhf/HFTokenDuel-v0" if hf else getattr(agent.env, "env_id", None)
    env_id = env_id or "nlhf/TokenDuel-v0"
    exact = agent.enumerable() and agent.config.nash_eval in ("auto", "exact")
    world = getattr(agent, "world", None)
    if world is not None:
        prompts = len(world.prompts.indices(split))
    else:  # a Hugging Face env: its own prompt sets
        prompts = len(getattr(agent.env, "prompts", {}).get(split) or ())
    where = f"the {prompts} prompts of the {split} split" if prompts else f"the {split} split"

    def rate(key: str) -> str:
        p = float(m[key])
        lo, hi = wilson_interval(p * n, n)
        return f"{p:.4f} (95% CI [{lo:.4f}, {hi:.4f}])"

    truth = (
        f"{rate('eval/win_rate_ref_true')} under the ground truth; "
        if "eval/win_rate_ref_true" in m
        else "(the game has no ground truth); "
    )
    print(
        f"{args.agent_path} vs pi_ref on {env_id}: {n} answer pairs on prompts drawn from "
        f"{where}: win rate {rate('eval/win_rate_ref_judge')} under the judge, {truth}"
        f"KL(pi || pi_ref) = {m['eval/kl_ref']:.4f}"
    )
    if "eval/exploitability" in m:
        how = "exact" if exact else "estimated"
        ci = (
            f" (95% CI [{m['eval/exploitability_low']:.4f}, {m['eval/exploitability_high']:.4f}])"
            if "eval/exploitability_low" in m
            else ""
        )
        print(
            f"{how} Nash metrics (beta = {agent.beta:g}): exploitability "
            f"{m['eval/exploitability']:.6g}{ci}, KL(pi* || pi) = {m['eval/kl_to_nash']:.6g}"
        )
