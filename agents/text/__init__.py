"""Token-level NLHF agents on ``nlhf/TokenDuel-v0`` (imports torch; :mod:`agents.registry` imports this
package on the first request for ``kind="text"``).

* ``nash_mp``: approximate Nash Mirror Prox, target-network design (A), extragradient (B) or EMA (C)
  (:mod:`agents.text.nash_mp`);
* ``online_ipo``: Online IPO on self-play pairs (:mod:`agents.text.online_ipo`);
* ``nash_md``: Nash-MD-PG with a per-token geometric-mixture opponent (:mod:`agents.text.nash_md`);
* ``nash_prox``: Nash Prox, Online IPO's self-play step on the game regularised toward a proximal
  anchor refreshed every ``inner_steps`` iterations (:mod:`agents.text.nash_prox`);
* ``mnpo``: MNPO's squared loss against a weighted population of the last iterates and ``pi_ref``
  (:mod:`agents.text.mnpo`).

    >>> import agents
    >>> agent = agents.make("nash_mp", "nlhf/TokenDuel-v0", seed=0, device="cpu")
    >>> agent.learn(num_queries=1024).history[-1]["game/queries"]
    1024.0

The same agents train any Hugging Face causal LM on ``nlhf/HFTokenDuel-v0`` (full fine-tuning or
a ``lora`` block; ``init_from`` a saved folder; ``precision: bf16``): the policy backends are in
:mod:`agents.text.backend`, data-parallel processes in :mod:`agents.text.distributed`.

Shared plumbing and metric names: :mod:`agents.text.common`; losses: :mod:`agents.text.losses`.
"""

from agents.text.common import TEXT_METRIC_NAMES, TextAgent, TextAgentConfig
from agents.text.mnpo import TextMNPO, TextMNPOConfig
from agents.text.nash_md import TextNashMD, TextNashMDConfig
from agents.text.nash_mp import TextNashMP, TextNashMPConfig
from agents.text.nash_prox import TextNashProx, TextNashProxConfig
from agents.text.online_ipo import TextOnlineIPO, TextOnlineIPOConfig

__all__ = [
    "TEXT_METRIC_NAMES",
    "TextAgent",
    "TextAgentConfig",
    "TextMNPO",
    "TextMNPOConfig",
    "TextNashMD",
    "TextNashMDConfig",
    "TextNashMP",
    "TextNashMPConfig",
    "TextNashProx",
    "TextNashProxConfig",
    "TextOnlineIPO",
    "TextOnlineIPOConfig",
]
