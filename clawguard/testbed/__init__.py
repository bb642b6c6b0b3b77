"""Local test bed that mimics an OpenShell "generation 1" gateway cluster.

``Testbed`` starts a Docker container named ``openshell-cluster-<gateway>``
running a real containerd (state dir ``/run/k3s/containerd``); sandboxes are
real containerd containers in namespace ``k8s.io`` with 64-hex IDs and
Kubernetes pod labels. See :mod:`clawguard.testbed._testbed` for details and
``python -m clawguard.testbed --help`` for the CLI.
"""

from ._images import (
    CLUSTER_REPO,
    CONTAINERD_SOCK,
    CONTAINERD_STATE,
    DEFAULT_SANDBOX_UID,
    SANDBOX_REPO,
    sandbox_ref,
)
from ._testbed import (
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
    "K8S_NAMESPACE",
    "LABEL_CONTAINER_NAME",
    "LABEL_POD_NAME",
    "LABEL_POD_NAMESPACE",
    "LABEL_POD_UID",
    "POD_NAMESPACE",
    "SANDBOX_REPO",
    "Testbed",
    "TestbedError",
    "rootfs_path",
    "sandbox_ref",
]
