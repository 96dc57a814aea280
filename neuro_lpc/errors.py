"""Project-wide exceptions."""


class DivergenceError(RuntimeError):
    """A chain or circuit produced NaN/inf.  Carries the step and the unit where it first happened."""

    def __init__(self, message: str, step: int | None = None, chain: int | None = None, unit: str | int | None = None):
        super().__init__(message)
        self.step, self.chain, self.unit = step, chain, unit


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""
