"""The one error type users see: the CLI prints its message on one line and exits with status 2."""


class StarError(ValueError):
    """Bad input (genome, config, search space, preset, path...). The message names the problem."""
