"""The zoo: YAML hyper-parameters per agent and env id, run folders and the ``nlhf-zoo`` command.

* :mod:`agents.zoo.configs`: the zoo configs (``zoo_configs/<agent>.yml``), resolved and validated
  (re-exported here: ``zoo.resolve``, ``zoo.make`` (``agents.make`` with the zoo's settings),
  ``zoo.load_yaml``, ``zoo.parse_params``, ...);
* :mod:`agents.zoo.runs`: run folders, ``metrics.csv``, the latest resumable state of a run;
* :mod:`agents.zoo.cli`: the ``nlhf-zoo`` command (train, eval, tournament, plot, demo, ...).
"""

from agents.zoo.configs import (
    META_KEYS,
    ZooEntry,
    default_config_dir,
    load_yaml,
    make,
    parse_params,
    resolve,
)

__all__ = [
    "META_KEYS",
    "ZooEntry",
    "default_config_dir",
    "load_yaml",
    "make",
    "parse_params",
    "resolve",
]
