"""What the benchmark scripts print about the machine they ran on, and what they read of processes (/proc)."""

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_of(pid: int) -> dict:
    """Current and peak resident memory of a process and its proportional share, in MB, from /proc/PID."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    try:  # proportional set size: shared pages (a forkserver's, with its workers) counted once in all
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next(int(line.split()[1]) / 1024 for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        pss = float("nan")
    return {"rss": values.get("VmRSS", 0.0), "peak": values.get("VmHWM", 0.0), "pss": pss}


def children_of(pid: int) -> list:
    """[(pid, command line)] of the live child processes of pid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    out.append((int(name), f.read().replace(b"\0", b" ").decode(errors="replace").strip()))
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
    return sorted(out)
