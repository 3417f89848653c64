"""Describe the software and hardware a run used, for environment.json."""

import importlib.metadata
import platform
from typing import Any

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets", "mnist-jax")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape results (None where missing)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_environment(seed: int | None = None) -> dict[str, Any]:
    """Package versions, Python, platform, processor and JAX devices."""
    return {
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "backend": jax.default_backend(),
        "devices": [str(device) for device in jax.devices()],
        "seed": seed,
    }


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo where available."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
