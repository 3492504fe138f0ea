"""Executors run a job's script somewhere; `get_executor(name)` returns one."""

from .base import (
    AFTER_SCRIPT_TIMEOUT,
    ExecResult,
    ExecSpec,
    Executor,
    OutputFn,
    executor_names,
    get_executor,
    register_executor,
)

__all__ = [
    "AFTER_SCRIPT_TIMEOUT",
    "ExecResult",
    "ExecSpec",
    "Executor",
    "OutputFn",
    "executor_names",
    "get_executor",
    "register_executor",
]
