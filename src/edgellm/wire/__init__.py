"""The OpenAI wire format, owned by neither the node's API nor the gateway: request and response
schemas (`schemas`), engine events to answers and SSE chunks (`encode`), answers and SSE chunks
back to engine events (`decode`), and a request's fields as engine parameters (`params`).

It imports only the engine's plain types and the configuration's limits, so the API, the
gateway, the testbed and the test fakes all speak it without importing each other.
"""
