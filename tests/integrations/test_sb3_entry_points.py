"""The standard entry points of Stable-Baselines3 and Gymnasium work on the env ids as strings:
``make_vec_env``, ``PPO("MlpPolicy", "<id>")``, ``VecVideoRecorder`` and ``RecordVideo`` (which ask for
``render_mode="rgb_array"``), and the frames are real pictures of the game."""

import gymnasium
import numpy as np
import pettingzoo

import nlhf_envs  # noqa: F401  (registers the ids)


def test_make_vec_env_and_ppo_take_env_ids(one_torch_thread):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("nlhf/BiasedRPS-SingleSeat-v0", n_envs=4, seed=0)
    assert venv.num_envs == 4
    model = PPO("MlpPolicy", "nlhf/RPS-SingleSeat-v0", n_steps=32, batch_size=32, seed=0)
    model.learn(64)
    assert model.num_timesteps >= 64
    venv.reset()
    frames = venv.get_images()  # SB3 renders every sub-env as rgb_array
    assert len(frames) == 4 and all(f.shape == (360, 480, 3) for f in frames)
    venv.close()


def test_video_recorders_record_real_frames(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecVideoRecorder

    venv = make_vec_env(
        "nlhf/RPS-SingleSeat-v0", n_envs=1, seed=0, env_kwargs={"render_mode": "rgb_array"}
    )
    rec = VecVideoRecorder(venv, str(tmp_path), lambda step: step == 0, video_length=5)
    rec.reset()
    for _ in range(5):
        rec.step(np.array([0]))
    rec.close()
    assert list(tmp_path.glob("*.mp4"))


def test_frames_show_the_round():
    env = pettingzoo.make("parallel", "nlhf/BiasedRPS-v0", render_mode="rgb_array")
    env.reset(seed=0)
    before = env.render()
    env.step({"player_0": 0, "player_1": 1})
    after = env.render()
    assert before.dtype == np.uint8 and before.shape == (360, 480, 3)
    assert not np.array_equal(before, after)  # the played cell and the outcome are drawn
    view = gymnasium.make("nlhf/TinyTokenDuel-SingleSeat-v0", render_mode="rgb_array")
    view.reset(seed=0)
    frame = view.render()
    assert frame.shape == (360, 480, 3) and frame.std() > 1.0  # text on a white page


def test_gymnasium_record_video_writes_a_video(tmp_path):
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(
        gymnasium.make("nlhf/BiasedRPS-SingleSeat-v0", render_mode="rgb_array"),
        video_folder=str(tmp_path),
        episode_trigger=lambda e: e == 0,
    )
    env.reset(seed=0)
    env.step(0)
    env.close()
    videos = list(tmp_path.glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000
