"""RGB frames of the preference games (``render_mode="rgb_array"``), drawn with matplotlib's Agg canvas.

* :func:`matrix_frame`: the round on the preference matrix ``P_x`` (a heat map of ``P(y > y' | x)``,
  the played cell outlined, the outcome in the title);
* :func:`text_frame`: lines of text (the token duel's prompt, both answers and the verdict);
* :func:`render_text`: the ``"ansi"`` and ``"human"`` modes every env shares (return or print).

Frames are ``uint8`` arrays of shape ``(height, width, 3)`` with a fixed size per env, as video
recorders (Gymnasium's ``RecordVideo``, SB3's ``VecVideoRecorder``) need. matplotlib is imported
only when a frame is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["FRAME_SIZE", "matrix_frame", "text_frame", "render_text"]

#: ``(width, height)`` of every frame in pixels.
FRAME_SIZE: tuple[int, int] = (480, 360)
_DPI = 100


def render_text(render_mode: str | None, text: Callable[[], str]) -> str | None:
    """The text render modes of every nlhf-zoo env: ``None`` renders nothing, ``"ansi"`` returns
    ``text()`` and ``"human"`` prints it (and returns ``None``). ``text`` is called only when a
    mode is set."""
    if render_mode is None:
        return None
    shown = text()
    if render_mode == "human":
        print(shown)
        return None
    return shown


def _canvas():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FRAME_SIZE[0] / _DPI, FRAME_SIZE[1] / _DPI), dpi=_DPI)
    return fig, FigureCanvasAgg(fig)


def _pixels(fig, canvas) -> np.ndarray:
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    frame = np.ascontiguousarray(rgba[..., :3])
    assert frame.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    return frame


def matrix_frame(
    P: np.ndarray,
    actions: tuple[int, int] | None = None,
    outcome: float | None = None,
    title: str = "",
) -> np.ndarray:
    """A frame of one round of a matrix preference game.

    Args:
        P: ``(K, K)`` preference matrix of the round's context.
        actions: ``(y, y')`` played by ``player_0`` and ``player_1`` (outlined), or ``None``.
        outcome: 1 if ``player_0``'s response was preferred, 0 if not, ``None`` before a round.
        title: the first line of the title (the game and the round).

    Returns:
        ``uint8`` array ``(360, 480, 3)``.
    """
    P = np.asarray(P, dtype=np.float64)
    fig, canvas = _canvas()
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(P, vmin=0.0, vmax=1.0, cmap="coolwarm", interpolation="nearest")
    K = P.shape[0]
    if K <= 12:
        for i in range(K):
            for j in range(K):
                ax.text(j, i, f"{P[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("player_1's response y'")
    ax.set_ylabel("player_0's response y")
    line = title
    if actions is not None:
        y0, y1 = int(actions[0]), int(actions[1])
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((y1 - 0.5, y0 - 0.5), 1, 1, fill=False, lw=3, ec="black"))
        verdict = "" if outcome is None else f", {'player_0' if outcome else 'player_1'} preferred"
        line = f"{title}\nP(y={y0} > y'={y1}) = {P[y0, y1]:.3f}{verdict}"
    ax.set_title(line, fontsize=9)
    fig.tight_layout()
    return _pixels(fig, canvas)


def text_frame(lines: Sequence[str]) -> np.ndarray:
    """A frame showing ``lines`` of monospaced text (long lines are cut at 70 characters).

    Returns:
        ``uint8`` array ``(360, 480, 3)``.
    """
    fig, canvas = _canvas()
    fig.patch.set_facecolor("white")
    shown = [ln if len(ln) <= 70 else ln[:67] + "..." for ln in lines]
    fig.text(0.02, 0.97, "\n".join(shown), family="monospace", fontsize=8, va="top", ha="left")
    return _pixels(fig, canvas)
