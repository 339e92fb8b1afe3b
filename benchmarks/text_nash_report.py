"""The ``report`` sub-command of ``benchmarks/text_nash.py``: ``text_nash.md`` (tables of the tuning,
head-to-head and full-size results) and a plot per head-to-head file, from the JSON results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from text_nash_core import COMMON, DEFAULT_RESULTS, describe, fmt_ci, same_budget


def _tags(results: Path) -> list[str]:
    """Tags of the tuning and head-to-head files present, the ``nash`` protocol first."""
    found = set()
    for path in results.glob("text_nash_*.json"):
        name = path.stem.removeprefix("text_nash_").removeprefix("tune_")
        if not name.startswith(("full_", "prox", "floor_", "designs_")):
            found.add(name)
    return sorted(found, key=lambda t: (t.startswith("heldout_"), "beta" in t, "cyclic" in t, t))


def _tune_lines(t: dict[str, Any], name: str) -> list[str]:
    grid_text = "; ".join(
        (
            f"{c['agents']}: lrs {c['lrs']}, history {c['histories']}"
            if set(c["agents"].split(",")) == {"mnpo"}  # MNPO alone: its own grid only
            else f"{c['agents']}: lrs {c['lrs']}, eta/beta {c['etas_over_beta']}, mixtures "
            f"{c['mixtures']}" + (f", history {c['histories']}" if "mnpo" in c["agents"] else "")
        )
        + (f", every setting with {c['extra']}" if c.get("extra") else "")
        for c in t.get("commands", [])
    ) or (f"lrs {t['lrs']}, eta/beta {t.get('etas_over_beta')}, mixtures {t.get('mixtures')}")
    lines = [f"### Tuning ({name})", "",
             f"Budget {t['budget']} queries, {t['seeds']} seeds (0..{t['seeds'] - 1}); grid: "
             f"{grid_text}. Score: mean exploitability (last iterate) on the 24 validation prompts "
             "(lower is better).", "",
             "| agent | setting | validation exploitability |", "|---|---|---|"]  # fmt: skip
    for r in t["results"]:
        best = " (chosen)" if t["best"][r["agent"]]["config"] == r["config"] else ""
        lines.append(f"| {r['agent']} | `{r['config']}`{best} | {r['val_expl']:.4f} |")
    return [*lines, ""]


def _h2h_lines(h: dict[str, Any], name: str) -> list[str]:
    test = "the 8 test prompts" + (" (unseen in training)" if h.get("protocol") != "nash" else "")
    ref = h["pi_ref"]
    seeds = {s.get("seeds", h.get("seeds")) for s in h["agents"].values()}
    lines = [f"### Head-to-head ({name})", "",
             f"Budget {h['budget']} queries, seeds 100.. ({'/'.join(map(str, sorted(seeds)))} per "
             f"agent), settings from tuning `{h.get('tuned_from', name)}`. Metrics on {test}; 95% "
             "intervals: bootstrap over (seed, prompt) cells. pi_ref: exploitability "
             f"{ref['expl']:.4f}, KL(pi*||pi_ref) {ref['kl']:.4f}.", "",
             "| agent | queries | exploitability (last iterate) | KL(pi* \\|\\| pi) |",
             "|---|---|---|---|"]  # fmt: skip
    for agent, s in h["agents"].items():
        for c in s["curve"]:
            lines.append(
                f"| {agent} | {c['queries']} | {fmt_ci(c['expl'], c['expl_ci'])} | "
                f"{fmt_ci(c['kl'], c['kl_ci'])} |"
            )
    lines += ["", "Average iterate (uniform mixture of the evaluated iterates of the second "
              "half of the budget):", "", "| agent | setting | exploitability | KL(pi* \\|\\| pi) |",
              "|---|---|---|---|"]  # fmt: skip
    for agent, s in h["agents"].items():
        lines.append(
            f"| {agent} | `{s['config']}` | {fmt_ci(s['average_expl'], s['average_expl_ci'])} | "
            f"{fmt_ci(s['average_kl'], s['average_kl_ci'])} |"
        )
    lines += ["", "Paired difference of exploitability (Nash-MP minus other, same seeds and "
              "prompts; negative: Nash-MP less exploitable)"
              + ("; a row `a - b` is a minus b likewise" if any(
                  not k.startswith("nash_mp - ") for k in h.get("paired_expl_diff", {}))
                 else "") + ":", ""]  # fmt: skip
    if "paired_expl_diff" in h:
        lines += ["| pair | queries | mean difference [95% interval] |", "|---|---|---|"]
        for k, v in h["paired_expl_diff"].items():
            for r in v["last"]:
                lines.append(f"| {k} | {r['queries']} | {fmt_ci(r['diff'], r['ci'])} |")
            a = v["average"]
            first, _, second = k.partition(" - ")
            other = h.get("raw", {}).get(second, {}).get("queries")
            mp_q = h.get("raw", {}).get(first, {}).get("queries")
            if a is None or (other and mp_q and not same_budget(other[-1], mp_q[-1])):
                lines.append(f"| {k} | average iterate | not paired (other budgets) |")
            else:
                lines.append(f"| {k} | average iterate | {fmt_ci(a['diff'], a['ci'])} |")
    else:
        for k, ci in h["paired_final_expl_diff"].items():
            lines.append(f"- {k} (last iterate, final): 95% interval [{ci[0]:.4f}, {ci[1]:.4f}]")
    ce = h["ceiling"]
    lines += ["", f"Ceiling: tabular exact Nash-MP (eta = {ce['eta']:.3g}) on the test game, "
              f"iteration k placed at k x {ce['queries_per_iteration']} queries (one neural "
              "Nash-MP iteration):", "", "| iteration | queries | exploitability | KL |",
              "|---|---|---|---|"]  # fmt: skip
    for c in ce["curve"]:
        lines.append(
            f"| {c['iteration']} | {c['iteration'] * ce['queries_per_iteration']} | "
            f"{c['test_expl']:.5f} | {c['test_kl']:.5f} |"
        )
    return [*lines, ""]


def _full_lines(d: dict[str, Any]) -> list[str]:
    """The estimated Nash metrics of a ``full`` run: mean over seeds, and each seed's estimate with
    its 95% t-interval over prompts."""
    lines = [f"## Full-size world `{d['env']}` (estimated, `text_nash.py full`)", "",
             f"Estimator of `equations.md` §7 on {d['prompts']} held-out prompts, n = "
             f"{d['samples']} pi_ref samples per prompt (m = {2 * d['samples']} fresh samples per "
             f"side), device {d['device']}, protocol `{d['protocol']}`, settings tuned on the tiny "
             f"world `{d.get('tuned_from')}` with the shared setting {d.get('common', COMMON)}. "
             "Queries 0: pi_ref (before training).", "",
             "| agent | setting | queries | exploitability, mean of seeds | per seed [95% interval] "
             "| KL(pi* \\|\\| pi), mean | seconds |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in d["rows"]:
        by.setdefault((r["agent"], r["queries"]), []).append(r)
    for (agent, q), rs in by.items():
        per = "; ".join(
            f"{r['eval/exploitability']:.4f} [{r['eval/exploitability_low']:.4f}, "
            f"{r['eval/exploitability_high']:.4f}]"
            for r in rs
        )
        expl = np.mean([r["eval/exploitability"] for r in rs])
        kl = np.mean([r["eval/kl_to_nash"] for r in rs])
        secs = np.mean([r["seconds"] for r in rs])
        lines.append(
            f"| {agent} | `{rs[0].get('config', {})}` | {q} | {expl:.4f} | {per} | {kl:.3f} | "
            f"{secs:.0f} |"
        )
    return [*lines, ""]


def cmd_report(args: argparse.Namespace, results: Path = DEFAULT_RESULTS) -> None:
    """Markdown tables (and a plot per world) from the JSON results of ``tune`` and ``h2h`` in
    ``results``; writes ``text_nash.md`` there."""
    lines = ["# Token-level agents on exact Nash metrics (tiny worlds)", "",
             "Written by `python benchmarks/text_nash.py report` from the JSON files next to it. "
             "The commands that produced them, and what of the planned grid was not run, are in "
             "docs/studies/token-nash.md, section \"Trained on all 32 prompts of the v0 tiny worlds\". "
             "Validation: "
             "the world's 24 \"train\" prompts (tuning only); test: its 8 \"heldout\" prompts "
             "(disjoint). "
             "Protocol `nash` (primary): the agents train on all 32 prompts, so validation and "
             "test prompts are both in the game's prompt distribution and the metrics measure "
             "convergence to the game's Nash equilibrium. Protocol `heldout` (secondary, the "
             "`heldout_*` sections): the agents train on the 24 train prompts only, so the test "
             "prompts are unseen and the metrics measure generalisation of the learned step.",
             ""]  # fmt: skip
    for t in _tags(results):
        tpath = results / f"text_nash_tune_{t}.json"
        hpath = results / f"text_nash_{t}.json"
        data = json.loads((hpath if hpath.exists() else tpath).read_text())
        lines += [f"## `{t}`: {describe(data, t)}", ""]
        if tpath.exists():
            lines += _tune_lines(json.loads(tpath.read_text()), t)
        if hpath.exists():
            h = json.loads(hpath.read_text())
            lines += _h2h_lines(h, t)
            _plot(h, t, results)
            lines += [f"![{t}](text_nash_{t}.png)", ""]
        if (results / f"text_nash_floor_{t}.md").exists():
            lines += [f"Nash-MP's prox fidelity along training (`text_nash.py floor`): "
                      f"[text_nash_floor_{t}.md](text_nash_floor_{t}.md)", ""]  # fmt: skip
    for path in sorted(results.glob("text_nash_full_*.json")):
        lines += _full_lines(json.loads(path.read_text()))
    (results / "text_nash.md").write_text("\n".join(lines))


def _plot(h: dict[str, Any], name: str, results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("expl", "kl"), strict=True):
        for agent, s in h["agents"].items():
            q = [c["queries"] for c in s["curve"]]
            ax.plot(q, [c[key] for c in s["curve"]], marker="o", label=agent)
            lo = [c[f"{key}_ci"][0] for c in s["curve"]]
            hi = [c[f"{key}_ci"][1] for c in s["curve"]]
            ax.fill_between(q, lo, hi, alpha=0.2)
        ce = h["ceiling"]
        ax.plot([c["iteration"] * ce["queries_per_iteration"] for c in ce["curve"]],
                [c[f"test_{key}"] for c in ce["curve"]], "k--", label="tabular nash_mp (ceiling)")  # fmt: skip
        ax.axhline(h["pi_ref"][key], color="grey", lw=0.8, ls=":", label="pi_ref")
        ax.set_yscale("log")
        ax.set_xlabel("preference queries")
        ax.set_ylabel({"expl": "exploitability (test)", "kl": "KL(pi* || pi) (test)"}[key])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: {describe(h, name)}, last iterate", fontsize=9)
    fig.tight_layout()
    fig.savefig(results / f"text_nash_{name}.png", dpi=90)
    plt.close(fig)
