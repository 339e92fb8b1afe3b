"""Bad input of multi-process training, in one process (issue 31): the ``distributed`` option,
the layouts several processes refuse and the one-line refusals of ``nlhf-zoo train`` under
``torchrun``. The multi-process runs themselves are in ``tests/agents/zoo/test_train_processes.py``
and ``test_hf_data_parallel.py`` (slow)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import agents
import agents.text.distributed as distributed
from agents.config import ConfigError
from agents.text.distributed import DataParallel, init_process_group_from_env, launched_processes
from agents.zoo.common import UserError
from agents.zoo.train import PeerStopped, _check_processes


def _config(**values):
    base = {"shards": None, "batch_size": 8, "distributed": "ddp", "lora": None}
    return SimpleNamespace(**{**base, **values})


def test_distributed_must_be_ddp_or_fsdp():
    with pytest.raises(
        ConfigError, match=r"^distributed: expected one of 'ddp', 'fsdp'; got 'zero3'"
    ):
        agents.make("online_ipo", "nlhf/TinyTokenDuel-v0", distributed="zero3")
    agent = agents.make("online_ipo", "nlhf/TinyTokenDuel-v0", distributed="fsdp", batch_size=4)
    assert not agent.dp.sharded and agent.dp.world == 1  # one process: nothing to shard


def test_layouts_two_processes_refuse(monkeypatch):
    monkeypatch.setattr(distributed, "_group", lambda: (1, 2))
    dp = DataParallel.current(_config(), "online_ipo")
    assert (dp.shards, dp.local_shards, dp.is_main, dp.evaluates) == (2, range(1, 2), False, False)
    fsdp = DataParallel.current(_config(distributed="fsdp"), "nash_md")
    assert fsdp.sharded and fsdp.evaluates  # every process takes part in a sharded evaluation
    with pytest.raises(
        ConfigError, match=r"^distributed: fsdp does not shard nash_mp .*: online_ipo, nash_md"
    ):
        DataParallel.current(_config(distributed="fsdp"), "nash_mp")
    with pytest.raises(ConfigError, match=r"^distributed: fsdp shards full fine-tuning only"):
        DataParallel.current(_config(distributed="fsdp", lora=object()), "online_ipo")
    with pytest.raises(ConfigError, match=r"^shards: 3 is not a multiple of the 2 data-parallel"):
        DataParallel.current(_config(shards=3, batch_size=9), "online_ipo")
    with pytest.raises(ConfigError, match=r"^mnpo: this token agent does not run data-parallel"):
        DataParallel.current(_config(), "mnpo")


def test_train_refuses_what_several_processes_cannot_share_in_one_line():
    with pytest.raises(UserError, match=r"^nash_md on nlhf/RPS-v0 does not train on 2 processes"):
        _check_processes("nash_md", "nlhf/RPS-v0", None, 2)
    with pytest.raises(UserError, match=r"^mnpo on nlhf/TinyTokenDuel-v0 does not train on 4"):
        _check_processes("mnpo", "nlhf/TinyTokenDuel-v0", None, 4)
    _check_processes("online_ipo", "nlhf/HFTokenDuel-v0", None, 2)  # accepted


def test_a_follower_stays_silent_when_the_first_process_stopped(monkeypatch, capsys):
    from agents.zoo import cli

    def stopped(args):
        raise PeerStopped("the first process stopped before training (UserError)")

    class Parser:
        def parse_args(self, argv):
            return SimpleNamespace(func=stopped)

    monkeypatch.setattr(cli, "build_parser", Parser)
    assert cli.main(["train"]) == 0  # torchrun then waits for the first process
    assert capsys.readouterr().err == ""  # the first process prints the error, once


def test_without_a_launcher_there_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_processes() == 1
    assert init_process_group_from_env() == (0, 1, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_processes() == 2


def test_nproc_needs_a_positive_count_and_no_launcher(monkeypatch, capsys):
    from agents.zoo.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (
        main(["train", "--agent", "online_ipo", "--env", "nlhf/TinyTokenDuel-v0", "--nproc", "0"])
        == 2
    )
    assert capsys.readouterr().err == "nlhf-zoo: error: --nproc must be an integer >= 1; got 0\n"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--nproc", "2"]) == 2
    assert capsys.readouterr().err == (
        "nlhf-zoo: error: --nproc: this command already runs under a launcher (torchrun); drop it\n"
    )


def test_each_cuda_process_needs_its_own_gpu(monkeypatch):
    import torch

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ConfigError, match=r"^process 1 of this machine needs its own GPU \(cuda:1\)"
    ):
        init_process_group_from_env("cuda")


def test_nproc_1_trains_in_this_process_as_without_it(monkeypatch, tmp_path):
    """``--nproc 1`` launches nothing: the same run as the command without it (same metrics)."""
    import csv

    from agents.zoo.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = ["train", "--agent", "online_ipo", "--env", "nlhf/TinyTokenDuel-v0", "-n", "64",
            "--params", "batch_size:32", "eval_every:0", "--no-progress"]  # fmt: skip
    rows = []
    for name, extra in (("one", ["--nproc", "1"]), ("plain", [])):
        assert main([*args, "--log-folder", str(tmp_path / name), *extra]) == 0
        (metrics,) = (tmp_path / name).rglob("metrics.csv")
        with metrics.open() as f:
            rows.append([r["loss/ipo"] for r in csv.DictReader(f)])
    assert len(rows[0]) == 2 and rows[0] == rows[1]
