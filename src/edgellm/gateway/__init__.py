"""The gateway: one OpenAI endpoint that picks, per request, which model on which replica answers.

`Router` (router.py) holds the models (each a set of replicas behind `backends/`), the routing
policies (`policies/`, registered by name, one method each) and the reliability machinery
(`health.py`: circuit breakers, active checks; retries and ordered fallbacks in router.py).
"""
