"""The data stage: fetch prices into a local store of raw bars + adjustment factors, and the quality
gate (`quality.py`) that decides what the signal stage may use."""
