"""Where a model runs: in this process (`local`), or behind the OpenAI HTTP API (`http`), with
replicas from a URL list or a DNS name (`dns`)."""
