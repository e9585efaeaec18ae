"""What ``train_gan`` shows an observer besides its log entries: the generator, every so many steps.

An observer (the MLflow training run in ``registry.training_run``) decides at which steps it wants to look;
the loop calls it there, outside the timed region, with the generator to sample from (the moving average
when the run keeps one). It must not draw from torch's global random state, which an exact resume restores.
"""

from __future__ import annotations

from typing import Protocol

from album_pipeline.model.networks import Generator


class TrainingObserver(Protocol):
    def samples_due(self, step: int, total_steps: int) -> bool:
        """Whether to call ``on_samples`` after ``step`` steps (1-based) of ``total_steps``."""
        ...

    def on_samples(self, step: int, generator: Generator) -> None:
        """Look at ``generator`` after ``step`` steps; its train/eval mode must be left as it was."""
        ...
