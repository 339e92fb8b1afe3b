"""SB3 ``.zip`` models load without running code from the file (issue 20, item 1).

A real PPO, A2C and DQN model rebuilt from the archive's plain data equals what SB3's own (pickling)
loader gives, weight for weight and action for action; a crafted archive carrying a pickle payload is
refused with a message naming the file and the opt-in, and the payload never runs.
"""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO

import nlhf_envs  # noqa: F401  (registers the ids)
from agents.sb3.files import UnsafeModelWarning, load_sb3_model
from agents.zoo.cli import main
from nlhf_envs.errors import CheckpointError

ENV = "nlhf/BiasedRPS-SingleSeat-v0"
OBS = np.linspace(0.0, 1.0, 11, dtype=np.float32).reshape(-1, 1)


class _Payload:
    """Unpickling this writes a marker file: the stand-in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from the file ran"))


def _train(cls, path: Path, **kw) -> Path:
    env = gymnasium.make(ENV)
    cls("MlpPolicy", env, seed=0, **kw).learn(64).save(path)
    return path.with_suffix(".zip")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sb3")
    relu = {"net_arch": [16], "activation_fn": torch.nn.ReLU}
    return {
        "PPO": _train(PPO, folder / "ppo", n_steps=64, batch_size=32),
        "A2C": _train(A2C, folder / "a2c", n_steps=8, policy_kwargs=relu),
        "DQN": _train(DQN, folder / "dqn", learning_starts=10),
    }


def _inject(src: Path, dst: Path, key: str, marker: Path) -> Path:
    """A copy of ``src`` whose ``data`` entry ``key`` holds a pickle that writes ``marker``."""
    blob = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            content = zin.read(item)
            if item.filename == "data":
                data = json.loads(content)
                entry = data.get(key) if isinstance(data.get(key), dict) else {}
                data[key] = {**entry, ":type:": "<class 'object'>", ":serialized:": blob}
                content = json.dumps(data).encode()
            zout.writestr(item, content)
    return dst


@pytest.mark.parametrize("algo", ["PPO", "A2C", "DQN"])
def test_a_real_model_loads_without_pickle_exactly_as_sb3_loads_it(models, algo):
    cls = {"PPO": PPO, "A2C": A2C, "DQN": DQN}[algo]
    theirs = cls.load(models[algo], device="cpu")  # SB3's own loader (unpickles: a file we made)
    ours = load_sb3_model(models[algo])
    assert type(ours) is cls
    assert ours.observation_space == theirs.observation_space
    assert ours.action_space == theirs.action_space
    a, b = theirs.policy.state_dict(), ours.policy.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert np.array_equal(
        theirs.predict(OBS, deterministic=True)[0], ours.predict(OBS, deterministic=True)[0]
    )
    with torch.no_grad():
        obs = torch.as_tensor(OBS)
        if algo == "DQN":
            assert torch.equal(theirs.q_net(obs), ours.q_net(obs))
        else:
            pa = theirs.policy.get_distribution(obs).distribution.probs
            pb = ours.policy.get_distribution(obs).distribution.probs
            assert torch.equal(pa, pb)


def test_a_model_plays_a_tournament_exactly_as_before(models, tmp_path, capsys):
    """The CLI tournament of a safely loaded model against pi_ref: the same win rates as with
    SB3's own loader (--trust-pickle), match for match."""
    rates = []
    for extra in ([], ["--trust-pickle"]):
        out = tmp_path / f"t{len(rates)}"
        args = ["tournament", str(models["PPO"]), "pi_ref", "--env", "nlhf/BiasedRPS-v0",
                "--n-duels", "200", "--output-dir", str(out), "--no-progress", *extra]  # fmt: skip
        with pytest.warns(UnsafeModelWarning) if extra else _no_warning():
            assert main(args) == 0
        rates.append(json.loads((out / "tournament.json").read_text())["win_rate"])
    capsys.readouterr()
    assert rates[0] == rates[1]


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", UnsafeModelWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_a_crafted_zip_is_refused_and_its_payload_never_runs(models, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _inject(models["PPO"], tmp_path / "evil.zip", "extra_state", marker)
    with pytest.raises(CheckpointError) as err:
        load_sb3_model(evil)
    assert "evil.zip" in str(err.value) and "--trust-pickle" in str(err.value)
    assert "extra_state" in str(err.value)
    out = tmp_path / "t"
    cases = (
        ["tournament", str(evil), "pi_ref", "--env", "nlhf/BiasedRPS-v0", "--output-dir", str(out)],
        ["eval", str(evil), "--env", "nlhf/BiasedRPS-v0"],
        ["eval", str(models["PPO"]), "--opponent", str(evil), "--env", "nlhf/BiasedRPS-v0"],
    )
    for args in cases:
        assert main([*args, "--no-progress"]) == 2
        message = capsys.readouterr().err
        assert "evil.zip" in message and "--trust-pickle" in message, message
    assert not marker.exists() and not out.exists()


def test_a_payload_in_a_standard_entry_is_never_decoded(models, tmp_path):
    """SB3 pickles the policy class itself; the loader rebuilds it from its plain description, so a
    payload swapped into that entry is inert (and runs only when the file is trusted)."""
    marker = tmp_path / "pwned"
    evil = _inject(models["PPO"], tmp_path / "evil.zip", "policy_class", marker)
    model = load_sb3_model(evil)
    assert isinstance(model, PPO) and not marker.exists()
    with pytest.warns(UnsafeModelWarning), pytest.raises(CheckpointError):
        load_sb3_model(evil, trust_pickle=True)  # SB3 unpickles: the payload runs, as documented
    assert marker.read_text() == "code from the file ran"


def test_a_custom_policy_is_refused_with_the_opt_in(tmp_path):
    from stable_baselines3.common.torch_layers import FlattenExtractor

    path = _train(
        PPO, tmp_path / "custom", n_steps=64, batch_size=32,
        policy_kwargs={"features_extractor_class": FlattenExtractor},
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"features_extractor_class.*--trust-pickle"):
        load_sb3_model(path)
    with pytest.warns(UnsafeModelWarning):
        assert isinstance(load_sb3_model(path, trust_pickle=True), PPO)


def test_a_damaged_model_is_a_one_line_error(models, tmp_path):
    raw = bytearray(models["DQN"].read_bytes())
    (tmp_path / "cut.zip").write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="cut.zip"):
        load_sb3_model(tmp_path / "cut.zip")
    with zipfile.ZipFile(models["DQN"]) as zin, zipfile.ZipFile(tmp_path / "w.zip", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "policy.pth":
                data = _torch_bytes({"q_net.q_net.0.weight": torch.zeros(2, 2)})
            zout.writestr(item, data)
    with pytest.raises(CheckpointError, match=r"w.zip.*cannot rebuild the DQN model"):
        load_sb3_model(tmp_path / "w.zip")


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _edit(src: Path, dst: Path, **changes) -> Path:
    """A copy of ``src`` whose ``data`` entries are changed (``key=value`` or ``key=(sub, value)``
    for an item of a mapping entry)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            content = zin.read(item)
            if item.filename == "data":
                data = json.loads(content)
                for key, value in changes.items():
                    if isinstance(value, tuple):
                        data[key][value[0]] = value[1]
                    else:
                        data[key] = value
                content = json.dumps(data).encode()
            zout.writestr(item, content)
    return dst


def test_a_small_file_declaring_a_huge_model_or_buffer_is_refused(models, tmp_path):
    # issue 29: net_arch [6000, 6000] took > 240 s and 1 GB; n_steps 10**9 allocated 7.45 GiB
    ppo, dqn = models["PPO"], models["DQN"]
    cases = [
        (_edit(ppo, tmp_path / "wide.zip", policy_kwargs={"net_arch": [6000, 6000]}),
         r"policy_kwargs net_arch \[6000, 6000\] declares at least 36,006,000 weights, but "
         r"policy.pth stores 8,836: refusing to build it"),
        (_edit(ppo, tmp_path / "steps.zip", n_steps=10**9),
         r"n_steps 1,000,000,000 asks for a buffer of about 64,000,000,000 bytes; a model file "
         r"may ask for at most 2,147,483,648 \(MAX_BUFFER_BYTES\)"),
        (_edit(dqn, tmp_path / "buffer.zip", buffer_size=10**9),
         r"buffer_size 1,000,000,000 asks for a buffer of about"),
        (_edit(ppo, tmp_path / "obs.zip", observation_space=("_shape", [10**9])),
         r"observation_space declares a Box of shape \(1000000000,\), more entries than the "
         r"8,836 parameters the file stores"),
        (_edit(dqn, tmp_path / "act.zip", action_space=("n", "10000000000")),
         r"action_space declares Discrete\(10000000000\), more actions than the"),
        (_edit(ppo, tmp_path / "neg.zip", policy_kwargs={"net_arch": [64, -3]}),
         r"policy_kwargs net_arch \[64, -3\] must list positive integers"),
    ]  # fmt: skip
    for path, message in cases:
        with pytest.raises(CheckpointError, match=rf"^'{path}': {message}"):
            load_sb3_model(path)
    # the limits leave real models alone: the default DQN buffer (10**6 steps) loads
    assert load_sb3_model(dqn).buffer_size == 1_000_000
