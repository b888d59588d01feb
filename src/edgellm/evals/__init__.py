"""Accuracy evaluation by log-likelihood (WinoGrande, ARC, BoolQ) against any server.

`tasks` defines what is scored, `scorers` how a server scores a continuation (EdgeLLM's
`/v1/loglikelihood`, or `/v1/completions` with `echo` + `logprobs` on other servers), `runner`
writes per-item outcomes as JSONL (resumable) and a summary with 95 % confidence intervals.
"""
