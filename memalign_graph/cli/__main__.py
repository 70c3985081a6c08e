"""``python -m memalign_graph.cli``: the same program as the ``memalign`` console script."""

from memalign_graph.cli import main

main()
