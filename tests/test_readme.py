"""README's Quickstart is three commands in their own code blocks, and CI runs the same set-up and test commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quickstart_has_three_commands():
    cmds = _quickstart_commands()
    assert len(cmds) == 3 and all("\n" not in c for c in cmds)
    assert "torch==2.14.1 torchvision==0.29.1" in cmds[0]
    assert cmds[1].endswith("prunekit demo")


def test_ci_runs_readme_setup_and_tests():
    setup, _, tests = _quickstart_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert setup in ci_lines
    assert tests in ci_lines
