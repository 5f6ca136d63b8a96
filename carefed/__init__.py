"""CareFed: privacy-preserving federated analytics for hospital consortia.

This package holds only the `carefed` console command, which composes the CLIs of the
layout's packages (hospital_node, consortium, fabric_network, privacy, api, compliance).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("carefed")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
