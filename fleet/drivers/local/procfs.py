"""Finding the local-process driver's programs among the machine's processes (Linux /proc).

Free of Django, so the benchmarks' parent process and the console's shutdown can use it.
"""

from __future__ import annotations

from pathlib import Path


def command_line(pid: int) -> list[str]:
    """The process's arguments ([] when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def programs_under(root: str | Path) -> list[tuple[int, Path]]:
    """The processes whose program (their first argument) lives under `root`, with that
    program's path (<instance>/os/<disk>/program.py for an instance's)."""
    found: list[tuple[int, Path]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(arguments) < 2 or not arguments[1].decode(errors="replace").startswith(f"{root}/"):
            continue
        found.append((int(entry.name), Path(arguments[1].decode(errors="replace"))))
    return found
