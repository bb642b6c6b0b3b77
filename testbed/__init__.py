"""Local test bed that mimics an OpenShell "generation 1" gateway cluster.

``Testbed`` starts a Docker container named ``openshell-cluster-<gateway>``
running a real containerd (state dir ``/run/k3s/containerd``); sandboxes are
real containerd containers in namespace ``k8s.io`` with 64-hex IDs and
Kubernetes pod labels. See :mod:`testbed._testbed` for details and
``python -m testbed --help`` for the CLI.

Each pod also has what clawguard talks to in a real NemoClaw sandbox (see
:mod:`testbed.standins`): a stand-in OpenClaw gateway
(``nohup openclaw gateway run > /tmp/gateway.log 2>&1 &``, answering
``http://127.0.0.1:18789/``), and Debian's real ``sshd``, reached with the real
OpenSSH client through the ``openshell`` stand-in
(:meth:`Testbed.install_openshell`)::

    ssh -o ProxyCommand='openshell ssh-proxy --gateway-name nemoclaw --name NAME' sandbox@openshell-NAME

Every new pod has a new SSH host key (:meth:`Testbed.known_hosts_line`).

:class:`DockerSandboxes` adds OpenShell "generation 2" sandboxes beside it: plain
Docker containers from the same sandbox root filesystem, named and labelled like
OpenShell's Docker driver does, reached through the same ``openshell`` stand-in
(see :mod:`testbed._docker_sandbox`).
"""

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
from ._testbed import (
    GATEWAY_PORT,
    GATEWAY_START,
    K8S_NAMESPACE,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    POD_NAMESPACE,
    Testbed,
    TestbedError,
    rootfs_path,
)

__all__ = [
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
    "POD_NAMESPACE",
    "SANDBOX_REPO",
    "SSH_HOST_PUBKEY",
    "DockerSandboxes",
    "Testbed",
    "TestbedError",
    "rootfs_path",
    "sandbox_ref",
]
