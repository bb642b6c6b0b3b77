"""One live pod of a sandbox: where it is (target and instance) and what it is (its facts).

Everything that touches a pod takes one of these, so the facts learned once about a
pod (its users, its layout, the agent's version) travel with it instead of being
looked up again or passed along one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .agent import AgentCLI, SandboxFacts
from .entries import Ids, OwnerRef
from .sandboxfs import PreRead, SandboxFS
from .targets import ExecResult, Instance, Target


@dataclass(frozen=True)
class Pod:
    target: Target
    instance: Instance
    facts: SandboxFacts
    user: OwnerRef  # the sandbox user, as configured
    command: str = "openclaw"  # the agent's CLI
    # An inspection read with the facts, for the restore's first read (SandboxFS.inspect).
    preread: PreRead | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.instance.id

    @property
    def short_id(self) -> str:
        return self.instance.short_id

    def exec(self, argv: Sequence[str], stdin: bytes | None = None, *, as_user: bool = False) -> ExecResult:
        """Run argv in the pod, as root or as the sandbox user."""
        user = f"{self.ids.uid}:{self.ids.gid}" if as_user else None
        return self.target.exec(self.instance, argv, stdin, user=user)

    @property
    def ids(self) -> Ids:
        """The sandbox user's ids in this pod. Raises LookupError when it has no such user."""
        return self.facts.users.resolve(self.user)

    @property
    def home(self) -> str:
        return self.facts.users.home(self.user)

    def fs(self) -> SandboxFS:
        return SandboxFS(lambda argv, stdin: self.target.exec(self.instance, argv, stdin), self.preread)

    def agent(self) -> AgentCLI:
        return AgentCLI(self.target, self.instance, self.ids, self.home, self.command)
