"""Running `manage.py vmss` in tests: its JSON, its refusals (exit 1), its usage errors (exit 2)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, ManagementUtility, call_command


def vmss(*args: str) -> Any:
    """Run `vmss …`; its stdout, parsed as JSON."""
    out = io.StringIO()
    call_command("vmss", *args, stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())


def refused(*args: str) -> str:
    """Run `vmss …` that must be refused with exit code 1 and nothing on stdout; its message."""
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("vmss", *args, stdout=out, stderr=io.StringIO())
    assert caught.value.returncode == 1
    assert out.getvalue() == ""
    return str(caught.value)


def usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `manage.py vmss …` as the command line does; argparse must exit 2. Its stderr."""
    with pytest.raises(SystemExit) as caught:
        ManagementUtility(["manage.py", "vmss", *args]).execute()
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err
