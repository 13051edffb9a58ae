"""realjudge: regression-aware LLM judges (REAL, RAFT, TRACT, SFT, GRPO) and RAIL inference."""

__version__ = "0.1.0"
