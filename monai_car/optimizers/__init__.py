"""Optimizer factory and learning-rate schedules with CAR's settings."""

from __future__ import annotations

from .factory import create_car_optimizer, trainable_parameters
from .lr_scheduler import LR_POLICIES, create_lr_scheduler

__all__ = ["LR_POLICIES", "create_car_optimizer", "create_lr_scheduler", "trainable_parameters"]
