"""Project-wide exceptions."""


class DivergenceError(RuntimeError):
    """A chain or circuit produced NaN/inf.  Carries the step and the unit where it first happened."""

    def __init__(self, message: str, step: int | None = None, chain: int | None = None, unit: str | int | None = None):
        super().__init__(message)
        self.step, self.chain, self.unit = step, chain, unit


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT (Ctrl-C) after finishing the step in flight and writing a checkpoint.

    A KeyboardInterrupt, so code that does not know it still stops; CLIs print its one-line message and
    exit with 130 (128 + SIGINT)."""

    def __init__(self, message: str, step: int | None = None, checkpoint: str | None = None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint
