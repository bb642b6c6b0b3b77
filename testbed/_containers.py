"""Finding the testbeds' own Docker containers."""

from __future__ import annotations

import docker
import docker.errors
from docker.models.containers import Container


def find(client: docker.DockerClient, name: str) -> Container | None:
    """The container called ``name``, running or not, if it exists."""
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def running(client: docker.DockerClient, name: str, error: type[Exception]) -> Container:
    """The running container ``name``, or ``error`` saying why not."""
    container = find(client, name)
    if container is None:
        raise error(f"container {name} does not exist; start it first (up)")
    container.reload()
    if container.status != "running":
        raise error(f"container {name} is {container.status}, not running")
    return container
