"""vishwam_core: the JAX library behind the `vishwam` CLI. It knows nothing of terminals."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vishwam")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
