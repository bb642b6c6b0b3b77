# The testbed fixture serves the integration and the end-to-end tests.
from tests.integration.conftest import testbed

__all__ = ["testbed"]
