"""Typed configuration: `load(path, overrides)` returns a validated `Config`."""
from rlhf.config.loader import all_keys, dump, from_dict, load, parse_override, read_yaml, set_dotted, to_dict
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
    "all_keys", "dump", "from_dict", "load", "parse_override", "read_yaml", "set_dotted", "to_dict",
]
