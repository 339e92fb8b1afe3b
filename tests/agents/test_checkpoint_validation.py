"""Checkpoints are validated after unpacking: one CheckpointError naming the file and the field."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import agents
from agents.checkpoint import CheckpointError
from nlhf_envs import make_game
from nlhf_envs.atomic import atomic_write_text


def _saved(tmp_path):
    agent = agents.make("nash_mp", make_game("rps"), seed=0, mode="exact")
    agent.learn(num_iterations=3)
    path = agent.save(tmp_path / "a.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return agent, arrays


def _write(path, arrays, meta=None):
    if meta is not None:
        arrays = {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _meta(arrays):
    return json.loads(arrays["meta"].tobytes().decode())


def test_a_valid_checkpoint_round_trips_with_its_history(tmp_path):
    agent, _ = _saved(tmp_path)
    back = agents.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.log_pi, agent.log_pi)
    assert back.history == agent.history and len(back.history) == 3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("state/log_pi", np.zeros((1, 5)), r"'state/log_pi': must have shape \(1, 3\)"),
        ("state/log_pi", np.zeros((1, 3), np.float32), r"'state/log_pi': must have dtype float64"),
        ("state/log_pi", np.array([[0.0, np.nan, 0.0]]), r"'state/log_pi': must be finite"),
        ("game/pi_ref", np.full((1, 4), 0.25), r"'game/pi_ref': must have shape \(1, 3\)"),
        ("game/P", np.full((1, 3, 3), 0.5, np.float32), r"'game/P': must have dtype float64"),
    ],
)
def test_bad_arrays_are_refused(tmp_path, field, value, message):
    _, arrays = _saved(tmp_path)
    path = _write(tmp_path / "bad.npz", {**arrays, field: value})
    with pytest.raises(CheckpointError, match=rf"bad.npz'?: field {message}"):
        agents.load(path)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seed", "0", "'seed': must be a non-negative integer"),
        ("seed", -3, "'seed': must be a non-negative integer"),
        ("queries_used", 1.5, "'queries_used': must be a non-negative integer"),
        ("rng", {"bit_generator": "MT19937", "state": {}}, "'rng': must be a PCG64"),
        ("rng", [1, 2], "'rng': must be a PCG64"),
        ("act_rng", {"bit_generator": "PCG64", "state": {"state": "x"}}, "'act_rng': not a valid"),
        ("history_len", "3", "'history_len': must be a non-negative integer"),
        ("history_len", 4, r"'history/values': must have shape \(4, "),
        ("history_keys", "game/queries", "'history_keys': must be a list of strings"),
        ("game_beta", "0.1", "'game_beta': must be a number"),
        ("scalars", [], "'scalars': must be a mapping"),
    ],
)
def test_bad_meta_fields_are_refused(tmp_path, field, value, message):
    _, arrays = _saved(tmp_path)
    meta = {**_meta(arrays), field: value}
    path = _write(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CheckpointError, match=f"field {message}"):
        agents.load(path)


def test_a_small_file_cannot_declare_a_huge_array(tmp_path):
    _, arrays = _saved(tmp_path)
    path = _write(tmp_path / "big.npz", arrays)
    # replace log_pi by a header declaring 12000 x 12000 float64 followed by 1 MB of data
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (12000, 12000)}
    )
    member = buf.getvalue() + b"\0" * 1_000_000
    with zipfile.ZipFile(path) as zin:
        items = {
            i.filename: zin.read(i) for i in zin.infolist() if i.filename != "state/log_pi.npy"
        }
    with zipfile.ZipFile(path, "w") as zout:
        for name, data in items.items():
            zout.writestr(name, data)
        zout.writestr("state/log_pi.npy", member)
    assert os.path.getsize(path) < 1_100_000
    with pytest.raises(
        CheckpointError,
        match=r"field 'state/log_pi': declares shape \(12000, 12000\) \(1152000000 bytes\) but holds",
    ):
        agents.load(path)


def test_stale_temporary_files_of_a_killed_save_are_removed(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead = int(gone.stdout)
    stale = tmp_path / f".tmp-{dead}-abcd1234a.npz"
    stale.write_bytes(b"half a checkpoint")
    alive = tmp_path / f".tmp-{os.getppid()}-abcd1234a.npz"  # a live writer's file is kept
    alive.write_bytes(b"being written")
    other = tmp_path / f".tmp-{dead}-abcd1234b.txt"  # another target's file is not touched
    other.write_bytes(b"x")
    agent, _ = _saved(tmp_path)
    assert not stale.exists() and alive.exists() and other.exists()
    atomic_write_text(tmp_path / "b.txt", "ok")
    assert not other.exists()
    assert agents.load(tmp_path / "a.npz").num_iterations == agent.num_iterations


def test_version_1_checkpoints_with_json_history_still_load(tmp_path):
    agent, arrays = _saved(tmp_path)
    meta = _meta(arrays)
    meta.update(version=1, history=agent.history)
    del meta["history_len"], meta["history_keys"]
    old = {k: v for k, v in arrays.items() if not k.startswith("history/")}
    back = agents.load(_write(tmp_path / "v1.npz", old, meta))
    assert back.history == agent.history
    np.testing.assert_array_equal(back.log_pi, agent.log_pi)
    meta["history"] = [{"game/queries": "2"}]
    with pytest.raises(CheckpointError, match="field 'history': must be a list of"):
        agents.load(_write(tmp_path / "v1bad.npz", old, meta))


def test_text_checkpoint_fields_are_validated(tmp_path):
    agent = agents.make("online_ipo", "nlhf/TokenDuel-v0", seed=0, batch_size=4, eval_every=0)
    path = agent.save(tmp_path / "t.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = _meta(arrays)
    key = next(k for k in arrays if k.startswith("policy/") and arrays[k].ndim == 2)
    cases = [
        ({key: arrays[key][:1]}, None, f"field '{key}': must match reference/"),
        ({key: np.full_like(arrays[key], np.nan)}, None, f"field '{key}': must be finite"),
        ({"rng": arrays["rng"].astype(np.int64)}, None, "field 'rng': must be a torch generator"),
        ({}, {**meta, "seed": 1.5}, "field 'seed': must be a non-negative integer"),
        ({}, {**meta, "env": {"id": "nlhf/TokenDuel-v0", "max_new_tokens": 2.5}}, "max_new_tokens"),
        ({}, {**meta, "history_len": -1}, "field 'history_len': must be a non-negative"),
        ({}, {**meta, "history_len": 3}, "field 'history/values'"),
        (
            {},
            {**{k: v for k, v in meta.items() if k != "history_len"}, "history": [{"a": "b"}]},
            "field 'history': must be a list",
        ),  # a version-1 text checkpoint: JSON rows
    ]
    for i, (change, new_meta, message) in enumerate(cases):
        bad = _write(tmp_path / f"bad{i}.npz", {**arrays, **change}, new_meta)
        with pytest.raises(CheckpointError, match=message):
            agents.load(bad)
    assert agents.load(path).num_iterations == 0


def test_a_compressed_member_cannot_expand_a_small_file_into_gigabytes(tmp_path):
    """A deflated member of zeros declares ~1000x its stored size (a decompression bomb): refused
    from the archive's directory before a byte is decompressed (issue 20: 1 MB -> 1.13 GB)."""
    _, arrays = _saved(tmp_path)
    path = _write(tmp_path / "bomb.npz", arrays)
    buf = io.BytesIO()
    np.save(buf, np.zeros((4096, 4096)))  # 128 MiB of float64 zeros
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("state/extra.npy", buf.getvalue())
    assert os.path.getsize(path) < 1_000_000
    with pytest.raises(CheckpointError, match=r"bomb.npz.*uncompressed bytes.*decompression bomb"):
        agents.load(path)
    with pytest.raises(CheckpointError, match="decompression bomb"):
        agents.checkpoint.read_meta(path)


def test_a_token_checkpoint_declaring_a_huge_model_is_refused_before_allocating(tmp_path):
    agent = agents.make("online_ipo", "nlhf/TinyTokenDuel-v0", seed=0, batch_size=4, eval_every=0)
    path = agent.save(tmp_path / "t.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = _meta(arrays)
    huge = {**meta["lm_config"], "d_model": 1 << 20, "d_ff": 1 << 22}  # ~70 TB as float32
    cases = [
        (huge, "do not match the model config"),
        ({**meta["lm_config"], "n_layers": 0}, "'n_layers' must be a positive integer"),
        ({**meta["lm_config"], "depth": 3}, "invalid model config"),
        ([1, 2], "must be a mapping"),
    ]
    for i, (lm_config, message) in enumerate(cases):
        bad = _write(tmp_path / f"bad{i}.npz", arrays, {**meta, "lm_config": lm_config})
        with pytest.raises(CheckpointError, match=rf"bad{i}.npz.*lm_config.*{message}"):
            agents.load(bad)


def test_bit_flips_in_the_zip_headers_never_escape_as_tracebacks(tmp_path):
    """Flip one bit in every byte of the local header of the first member and of the central
    directory: loading either succeeds with the same policy or raises one CheckpointError."""
    agent, _ = _saved(tmp_path)
    good = (tmp_path / "a.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        first = zf.infolist()[0].header_offset
    central = good.rfind(b"PK\x01\x02", 0, good.rfind(b"PK\x05\x06"))  # last directory entry
    positions = [*range(first, first + 30), *range(central, len(good))]
    outcomes = {"loaded": 0, "refused": 0}
    for n, pos in enumerate(positions):
        flipped = bytearray(good)
        flipped[pos] ^= 1 << (n % 8)
        path = tmp_path / "flip.npz"
        path.write_bytes(bytes(flipped))
        try:
            back = agents.load(path)
        except CheckpointError:
            outcomes["refused"] += 1
            continue
        np.testing.assert_array_equal(back.log_pi, agent.log_pi)
        outcomes["loaded"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == len(positions)
