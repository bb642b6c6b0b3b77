"""Local test bed that mimics an OpenShell "generation 1" gateway cluster.

``Testbed`` starts a Docker container named ``openshell-cluster-<gateway>``
running a real containerd (state dir ``/run/k3s/containerd``); sandboxes are
real containerd containers in namespace ``k8s.io`` with 64-hex IDs and
Kubernetes pod labels. See :mod:`testbed._testbed` for details and
``python -m testbed --help`` for the CLI.

Each pod also has what clawguard talks to in a real NemoClaw sandbox (see
:mod:`testbed.standins`): an OpenClaw gateway
(``nohup openclaw gateway run > /tmp/gateway.log 2>&1 &``), and Debian's real
``sshd`` listening on 127.0.0.1 inside the pod, reached with the real OpenSSH
client through the ``openshell`` stand-in (:meth:`Testbed.install_openshell`)::

    ssh -o ProxyCommand='openshell ssh-proxy --gateway-name nemoclaw --name NAME' \\
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null sandbox@openshell-NAME

Every new pod has a new SSH host key. Like OpenShell's, it lives only in
sshd's memory, unless the sandbox was added with ``host_key_file=True``
(then :meth:`Testbed.known_hosts_line` reads it), stand-in and real-agent
sandboxes alike (:data:`STANDIN_HOST_KEY_FILE`, set in :mod:`testbed._images`).

The agent is either the fast busybox stand-in (``agent="standin"``, a
shell-script gateway answering ``http://127.0.0.1:18789/``) or the real
OpenClaw from npm (``agent="2026.9.6"``, any of :data:`AGENT_VERSIONS` or
another version): a Debian image in NemoClaw's layout of that era
(``layout="split"`` before 2026.4.24, ``"flat"`` from then on), with the
version's ``npm install -g`` bind-mounted read-only at ``/usr/local``
(:mod:`testbed._agents`, :mod:`testbed._agent_image`). ``agent_cli`` runs
its CLI inside the sandbox.

:class:`DockerSandboxes` adds OpenShell "generation 2" sandboxes beside it: plain
Docker containers from the same sandbox root filesystem, named and labelled like
OpenShell's Docker driver does, reached through the same ``openshell`` stand-in
(see :mod:`testbed._docker_sandbox`).
"""

from ._agent_image import LAYOUTS
from ._agents import AGENT_VERSIONS, LATEST_AGENT, STANDIN, AgentInstall, build_agent, layout_for
from ._docker_sandbox import DockerSandboxes
from ._images import (
    CLUSTER_REPO,
    CONTAINERD_SOCK,
    CONTAINERD_STATE,
    DEFAULT_SANDBOX_UID,
    SANDBOX_REPO,
    SSH_HOST_PUBKEY,
    sandbox_ref,
)
from ._spec import STANDIN_HOST_KEY_FILE, SandboxSpec
from ._testbed import (
    GATEWAY_PORT,
    GATEWAY_START,
    K8S_NAMESPACE,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    POD_NAMESPACE,
    TELEGRAM_PORT,
    Testbed,
    TestbedError,
    rootfs_path,
)

__all__ = [
    "AGENT_VERSIONS",
    "CLUSTER_REPO",
    "CONTAINERD_SOCK",
    "CONTAINERD_STATE",
    "DEFAULT_SANDBOX_UID",
    "GATEWAY_PORT",
    "GATEWAY_START",
    "K8S_NAMESPACE",
    "LABEL_CONTAINER_NAME",
    "LABEL_POD_NAME",
    "LABEL_POD_NAMESPACE",
    "LABEL_POD_UID",
    "LATEST_AGENT",
    "LAYOUTS",
    "POD_NAMESPACE",
    "SANDBOX_REPO",
    "SSH_HOST_PUBKEY",
    "STANDIN",
    "STANDIN_HOST_KEY_FILE",
    "TELEGRAM_PORT",
    "AgentInstall",
    "DockerSandboxes",
    "SandboxSpec",
    "Testbed",
    "TestbedError",
    "build_agent",
    "layout_for",
    "rootfs_path",
    "sandbox_ref",
]
