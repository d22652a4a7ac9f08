"""Action name -> handler. Handlers register with @action("Name") in their resource module."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from .config import Config


@dataclass
class Context:
    """What a handler knows of its request: who, where, and the open transaction."""
    account_id: str
    region: str
    request_id: str
    session: Session
    config: Config
    driver: Any  # hypervisor driver
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def then(self, fn: Callable[[], None]) -> None:
        """Run fn once the transaction is durable (write intent, then act)."""
        self.after_commit.append(fn)


Handler = Callable[[Context, dict], dict | None]
HANDLERS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name in HANDLERS:
            raise RuntimeError(f"{name} registered twice")
        HANDLERS[name] = fn
        return fn
    return register
