"""star: STAR-style neural architecture search for small hybrid language models."""

__version__ = "0.1.0"
