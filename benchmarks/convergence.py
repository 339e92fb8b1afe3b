"""Convergence study of the tabular agents (the code lives in :mod:`agents.convergence`).

Same as ``nlhf-zoo convergence [OPTIONS]``; ``python benchmarks/convergence.py --help`` lists the options.
"""

from agents.convergence import main

if __name__ == "__main__":
    raise SystemExit(main())
