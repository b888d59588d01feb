"""The OpenAI-compatible HTTP application of a node or a gateway (FastAPI, with a plain-ASGI
fast path for chat and text completions)."""
