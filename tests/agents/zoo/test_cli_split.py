"""``agents.zoo.cli`` parses the command line only; each command's logic is its own module, usable
without the parser, and none of those modules imports the parser back."""

import argparse
import ast
from pathlib import Path

import pytest

from agents.zoo.cli import main

ZOO = Path(__file__).resolve().parents[3] / "agents" / "zoo"

#: everything ``cli.py`` may define: the parser, the entry point and the small option helpers
PARSING = {
    "build_parser",
    "main",
    "torch_threads",
    "_add_threads_option",
    "_add_trust_pickle_option",
    "_set_torch_threads",
    "_cmd_tune",
    "_ThreadState",
}


def test_the_cli_module_defines_parsing_only():
    tree = ast.parse((ZOO / "cli.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defined == PARSING


@pytest.mark.parametrize("path", sorted(p.name for p in ZOO.glob("*.py") if p.name != "cli.py"))
def test_no_zoo_module_imports_the_parser(path):
    tree = ast.parse((ZOO / path).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names} | {node.module or ""}
    assert not {m for m in imported if m.startswith("agents.zoo.cli")}


def test_the_command_modules_run_without_the_parser(tmp_path, capsys):
    from agents.zoo.listing import cmd_list
    from agents.zoo.plotting import cmd_plot
    from agents.zoo.train import train_run

    assert main(["list"]) == 0
    parsed = capsys.readouterr().out
    assert cmd_list(argparse.Namespace(conf_dir=None)) == 0
    assert capsys.readouterr().out == parsed

    agent, run = train_run(
        "nash_mp", "nlhf/RPS-v0", log_folder=tmp_path, num_queries=1024, progress=False
    )
    assert (agent.queries_used, run) == (1024, tmp_path / "nash_mp" / "RPS-v0_1")
    out = tmp_path / "kl.png"
    args = argparse.Namespace(
        env="nlhf/RPS-v0", log_folder=str(tmp_path), agents=None, metric="game/kl_to_nash", out=out
    )
    assert cmd_plot(args) == 0
    assert capsys.readouterr().out == f"{out}\n"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
