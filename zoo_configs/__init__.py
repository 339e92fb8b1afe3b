"""The zoo's hyper-parameters, one YAML file per agent (``<agent>.yml``), shipped as package data.

This folder is a package only so that an installed wheel carries the YAML files and
:func:`agents.zoo.configs.default_config_dir` finds them with :mod:`importlib.resources`.
"""
