"""memfs engine: the simulated memory-management stack, usable without FUSE."""
from .config import ConfigError, MachineConfig, load, parse
from .errors import EngineError, InternalError
from .machine import Machine

__all__ = ["Machine", "MachineConfig", "ConfigError", "EngineError", "InternalError", "load", "parse"]
