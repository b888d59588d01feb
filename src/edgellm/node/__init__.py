"""A node: one process serving one or more models over the OpenAI-compatible API."""
