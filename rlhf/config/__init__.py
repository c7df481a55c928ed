"""Typed configuration: `load(path, overrides)` returns a validated `Config`."""
from rlhf.config.loader import all_keys, dump, load, parse_override, to_dict
from rlhf.config.schema import (
    AlgorithmConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    GroupConfig,
    KLConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    PeftConfig,
    RayConfig,
    RewardConfig,
    RolloutConfig,
    TrainerConfig,
    WandbConfig,
)

__all__ = [
    "AlgorithmConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "GroupConfig", "KLConfig", "LoggingConfig",
    "LoraConfig", "ModelConfig", "PeftConfig", "RayConfig", "RewardConfig", "RolloutConfig", "TrainerConfig", "WandbConfig",
    "all_keys", "dump", "load", "parse_override", "to_dict",
]
