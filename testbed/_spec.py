"""What a test-bed sandbox is made of: sandbox uid, agent, layout, host-key file.

Both generations store it in the sandbox's labels (containerd container labels
for pods, Docker labels for containers), so ``restart``, ``recover`` and
``recreate`` bring a sandbox back as it was, unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ._agent_image import check_layout
from ._agents import STANDIN, check_agent, layout_for
from ._images import DEFAULT_SANDBOX_UID, STANDIN_HOST_KEY_FILE

LABEL_SANDBOX_UID = "testbed.sandbox-uid"
LABEL_AGENT = "testbed.agent"
LABEL_LAYOUT = "testbed.layout"
LABEL_HOST_KEY_FILE = "testbed.host-key-file"

__all__ = ["STANDIN_HOST_KEY_FILE", "SandboxSpec"]


@dataclass(frozen=True)
class SandboxSpec:
    """A sandbox's make-up. Build it with :meth:`make`, which checks and fills in defaults."""

    uid: int = DEFAULT_SANDBOX_UID
    agent: str = STANDIN
    layout: str = "split"
    host_key_file: bool = STANDIN_HOST_KEY_FILE

    @property
    def standin(self) -> bool:
        return self.agent == STANDIN

    @classmethod
    def make(
        cls,
        uid: int = DEFAULT_SANDBOX_UID,
        agent: str = STANDIN,
        layout: str | None = None,
        host_key_file: bool | None = None,
    ) -> SandboxSpec:
        """Check the values; ``layout`` defaults to the agent's era, ``host_key_file``
        to :data:`STANDIN_HOST_KEY_FILE` for the stand-in and False for a real agent.
        Raises ValueError."""
        if isinstance(uid, bool) or not isinstance(uid, int) or not 1 <= uid <= 65533:
            raise ValueError(f"sandbox uid must be in 1..65533, got {uid!r}")
        check_agent(agent)
        if layout is None:
            layout = layout_for(agent)
        check_layout(layout)
        if agent == STANDIN and layout != "split":
            raise ValueError("the stand-in image has only the split layout; use a real agent for layout 'flat'")
        if host_key_file is None:
            host_key_file = STANDIN_HOST_KEY_FILE if agent == STANDIN else False
        return cls(uid, agent, layout, bool(host_key_file))

    def changed(
        self,
        *,
        uid: int | None = None,
        agent: str | None = None,
        layout: str | None = None,
        host_key_file: bool | None = None,
    ) -> SandboxSpec:
        """This spec with what is given replaced. A new agent without a layout gets its era's layout."""
        if agent is not None and agent != self.agent and layout is None:
            layout = layout_for(agent)
        merged = replace(
            self,
            uid=self.uid if uid is None else uid,
            agent=self.agent if agent is None else agent,
            layout=self.layout if layout is None else layout,
            host_key_file=self.host_key_file if host_key_file is None else host_key_file,
        )
        return SandboxSpec.make(merged.uid, merged.agent, merged.layout, merged.host_key_file)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_SANDBOX_UID: str(self.uid),
            LABEL_AGENT: self.agent,
            LABEL_LAYOUT: self.layout,
            LABEL_HOST_KEY_FILE: "true" if self.host_key_file else "false",
        }

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> SandboxSpec:
        """The spec a sandbox was made with. Sandboxes from before these labels were
        stand-ins that kept their host key file."""
        agent = labels.get(LABEL_AGENT, STANDIN)
        hkf = labels.get(LABEL_HOST_KEY_FILE)
        return cls(
            uid=int(labels.get(LABEL_SANDBOX_UID, DEFAULT_SANDBOX_UID)),
            agent=agent,
            layout=labels.get(LABEL_LAYOUT, layout_for(agent)),
            host_key_file=True if hkf is None else hkf == "true",
        )
