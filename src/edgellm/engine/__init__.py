"""llama.cpp models in process: the model pool, the one scheduler loop with its slots, and the
per-token generation state."""
