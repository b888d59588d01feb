"""EdgeLLM: generative AI on CPU-only edge clusters."""

__version__ = "0.1.0"
