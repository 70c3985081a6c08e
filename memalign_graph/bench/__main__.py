"""``python -m memalign_graph.bench``: alignment at scale with a sleeping stub LLM (see ``main``)."""

from memalign_graph.bench import main

if __name__ == "__main__":
    main()
