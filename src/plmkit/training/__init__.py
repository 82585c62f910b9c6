"""One Trainer for pretraining and fine-tuning, with its configs, optimizer, schedules, checkpoints and data order."""

from plmkit.training.config import ImplConfig, TrainConfig, apply_override, dataclass_from_dict, load_recipe
from plmkit.training.data import ExampleStream, example_seed, ignore_seeds, iter_eval_batches
from plmkit.training.objectives import CausalLMObjective, Objective, PretrainingObjective, SupervisedObjective
from plmkit.training.optim import build_optimizer, lr_at, param_groups
from plmkit.training.trainer import Trainer, TrainResult

__all__ = [
    "CausalLMObjective", "ExampleStream", "ImplConfig", "Objective", "PretrainingObjective", "SupervisedObjective",
    "TrainConfig", "TrainResult", "Trainer", "apply_override", "build_optimizer", "dataclass_from_dict",
    "example_seed", "ignore_seeds", "iter_eval_batches", "load_recipe", "lr_at", "param_groups",
]
