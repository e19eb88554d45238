"""What the benchmark scripts print about the machine they ran on."""

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> str:
    """One line: CPUs, CPU model, Python version, and the load average when it is known."""
    try:
        load = "load average %.2f" % os.getloadavg()[0]
    except OSError:
        load = "load average unknown"
    return f"{os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}, {load}"
