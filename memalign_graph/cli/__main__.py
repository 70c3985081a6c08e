"""``python -m memalign_graph.cli``: the same program as the ``memalign`` console script."""

from memalign_graph.cli import main

if __name__ == "__main__":  # not on import (the API reference's build imports every module)
    main()
