"""Expert review in a browser: a review queue page served by LangGraph Server itself at ``/review``.

``langgraph.json`` names :data:`memalign_graph.webreview.app.app` as its ``http.app``, so the
server that serves the graphs also serves the page (no second server, nothing to build).
The page is a client of the server's own API: it calls it in-process with the signed-in
user's credentials, so the server's authentication and authorisation
(:mod:`memalign_graph.auth`) decide what the page may show and do.

Cases reach the queue from Python (:func:`queue_cases`) or from the command line
(``memalign queue``): each case becomes a thread of the served ``review`` graph, judged at
once and left waiting on the expert at the review interrupt.
"""

from memalign_graph.webreview.queue import QUEUE_TAG, aqueue_cases, queue_cases, queue_key

__all__ = ["QUEUE_TAG", "aqueue_cases", "queue_cases", "queue_key"]
