"""A validated flow: its tasks, what each runs, needs, retries and loops over.

`to_document()` is the JSON stored in `flows.definition`; `from_document()` reads it back,
so a flow execution always runs the definition it was started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_retries` more executions after a failure, each `delay` seconds after it."""

    max_retries: int = 0
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    #: the registered Celery task it runs
    task: str
    #: keyword arguments, may hold templates
    input: dict[str, Any] = field(default_factory=dict)
    #: explicit `depends_on` plus the tasks its templates use
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    #: None (one execution), a list, or a template that resolves to a list
    loop: Any = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class FlowDefinition:
    name: str
    version: str
    tasks: tuple[TaskSpec, ...]
    #: input name -> default (None: the input is required)
    inputs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def to_document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "inputs": dict(self.inputs),
            "tasks": [
                {
                    "name": task.name,
                    "task": task.task,
                    "input": task.input,
                    "depends_on": list(task.depends_on),
                    "retry": {"max_retries": task.retry.max_retries, "delay": task.retry.delay},
                    "loop": task.loop,
                }
                for task in self.tasks
            ],
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> FlowDefinition:
        return cls(
            name=document["name"],
            version=document["version"],
            description=document.get("description", ""),
            inputs=dict(document.get("inputs") or {}),
            tasks=tuple(
                TaskSpec(
                    name=task["name"],
                    task=task["task"],
                    input=task.get("input") or {},
                    depends_on=tuple(task.get("depends_on") or ()),
                    retry=RetryPolicy(**(task.get("retry") or {})),
                    loop=task.get("loop"),
                )
                for task in document["tasks"]
            ),
        )


__all__ = ["FlowDefinition", "RetryPolicy", "TaskSpec"]
