"""promptblame: which prompt or model version moved LLM answer quality."""

__version__ = "0.1.0"
