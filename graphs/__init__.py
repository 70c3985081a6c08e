"""Entry points for ``langgraph.json`` (LangGraph Studio / ``langgraph dev`` / LangGraph Server)."""
