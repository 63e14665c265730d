"""The evaluation stage: train a genotype's network with the paper's recipes, score checkpoints.

`train_genotype(genotype, space, ...)` runs on one process or, under torchrun, on many (DDP);
`evaluate_checkpoint(path)` gives test loss, top-1 and top-5 of a saved network.
"""

from msrdsl.train.loop import (
    Trainer,
    TrainingInterrupted,
    build_network,
    default_space_path,
    evaluate_checkpoint,
    resolve_genotype,
    resolve_space,
    run_training,
    train_genotype,
    Training,
)
from msrdsl.train.recipe import Recipe

__all__ = [
    "Recipe",
    "Trainer",
    "TrainingInterrupted",
    "build_network",
    "default_space_path",
    "evaluate_checkpoint",
    "resolve_genotype",
    "resolve_space",
    "run_training",
    "Training",
    "train_genotype",
]
