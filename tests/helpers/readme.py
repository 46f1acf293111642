"""The shell commands of README.md, parsed out of its fenced code blocks (for tests/test_readme_commands.py).

Rules (tested in tests/test_readme_commands.py):

* Every fenced block (```` ``` ```` or ``~~~``) whose info string is empty or a shell (``sh``, ``bash``,
  ``shell``, ``console``) is read; other languages (``json``, ...) are not commands.
* A line ending in ``\\`` continues on the next one; ``# comments`` are dropped (shell rules, via shlex).
* A block with ``$ `` prompts is a transcript: only the ``$ `` lines are commands, the lines after one
  are its shown output, and an output line starting with ``error:`` is the one-line error the command
  is expected to fail with (exactly).  A block without prompts is all commands.
* ``a && b`` is two commands, run in order.  Other shell operators (pipes, ``;``, redirections) are
  refused, as is any program other than ``bnhw`` / ``.venv/bin/bnhw``, ``make`` and
  ``torchrun ... -m bnhw``: a README line the test cannot run is a parse error, not a silent skip.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL_INFOS = {"", "sh", "bash", "shell", "console"}
BNHW_PROGRAMS = {"bnhw", ".venv/bin/bnhw"}
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
UNSUPPORTED = {"|", "||", ";", "&", ">", ">>", "<", "2>", "2>&1"}


class ReadmeParseError(ValueError):
    pass


@dataclass(frozen=True)
class ReadmeCommand:
    """One command of a README line (``a && b`` gives two, ``part`` 0 and 1)."""

    line: int                      # README line number (1-based) where the command's line starts
    text: str                      # the whole line as written: continuations joined, prompt and comment dropped
    argv: tuple[str, ...]          # this command's words
    part: int = 0
    expect_error: str | None = None   # the ``error: ...`` line the README shows after it

    @property
    def kind(self) -> str:
        """``bnhw`` (also under torchrun) or ``make``."""
        return "make" if self.argv[0] == "make" else "bnhw"

    @property
    def torchrun(self) -> bool:
        return self.argv[0] == "torchrun"

    @property
    def bnhw_args(self) -> tuple[str, ...]:
        """The arguments after ``bnhw`` (``bnhw search --budget 57M`` -> ``("search", "--budget", "57M")``)."""
        if self.argv[0] in BNHW_PROGRAMS:
            return self.argv[1:]
        if self.torchrun:
            i = self.argv.index("-m")
            return self.argv[i + 2:]
        raise ValueError(f"not a bnhw command: {self.text}")

    @property
    def subcommand(self) -> str:
        """``search``, ``build``, ... for bnhw; the target for make (``make`` alone: ``all``)."""
        if self.kind == "make":
            targets = [a for a in self.argv[1:] if not a.startswith("-") and "=" not in a]
            return targets[0] if targets else "all"
        return self.bnhw_args[0]

    def option(self, *names: str, default: str | None = None) -> str | None:
        """The value of the last ``--name VALUE`` / ``--name=VALUE`` among ``names`` (click: the last wins)."""
        return option_value(self.argv, *names, default=default)

    def flag(self, name: str) -> bool:
        return name in self.argv

    @property
    def id(self) -> str:
        return f"L{self.line}" + (f".{self.part}" if self.part else "") + f": {' '.join(self.argv)}"


def option_value(argv: tuple[str, ...] | list[str], *names: str, default: str | None = None) -> str | None:
    value = default
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                value = argv[i + 1]
            elif n.startswith("--") and a.startswith(n + "="):
                value = a[len(n) + 1:]
    return value


def _words(text: str, line: int) -> list[list[str]]:
    try:
        words = shlex.split(text, comments=True)
    except ValueError as e:
        raise ReadmeParseError(f"README line {line}: cannot split {text!r}: {e}") from None
    bad = [w for w in words if w in UNSUPPORTED]
    if bad:
        raise ReadmeParseError(f"README line {line}: shell operator {bad[0]!r} in {text!r} (only && is run)")
    parts, cur = [], []
    for w in words:
        if w == "&&":
            parts.append(cur)
            cur = []
        else:
            cur.append(w)
    parts.append(cur)
    if any(not p for p in parts):
        raise ReadmeParseError(f"README line {line}: empty command in {text!r}")
    for p in parts:
        prog = p[0]
        ok = (prog in BNHW_PROGRAMS or prog == "make"
              or (prog == "torchrun" and "-m" in p and p.index("-m") + 1 < len(p) and p[p.index("-m") + 1] == "bnhw"))
        if not ok:
            raise ReadmeParseError(f"README line {line}: {prog!r} is not a command the README test runs ({text!r}); "
                                   "teach tests/helpers/readme.py and tests/test_readme_commands.py about it")
        if prog in BNHW_PROGRAMS and len(p) < 2:
            raise ReadmeParseError(f"README line {line}: bnhw without a command")
    return parts


def _logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join ``\\`` continuations; keep the first physical line's number."""
    out: list[tuple[int, str]] = []
    cur: tuple[int, str] | None = None
    for n, raw in block:
        s = raw.rstrip()
        if cur is None:
            cur = (n, s)
        else:
            cur = (cur[0], cur[1] + " " + s.lstrip())
        if cur[1].endswith("\\"):
            cur = (cur[0], cur[1][:-1].rstrip())
            continue
        out.append(cur)
        cur = None
    if cur is not None:
        out.append(cur)
    return out


def _blocks(text: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """Fenced blocks as (info, [(line number, line)])."""
    blocks, cur, info, fence = [], None, "", ""
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if cur is None:
            if m:
                cur, info, fence = [], m.group(2).lower(), m.group(1)
        elif line.strip().startswith(fence) and not line.strip()[len(fence):].strip():
            blocks.append((info, cur))
            cur = None
        else:
            cur.append((n, line))
    if cur is not None:
        raise ReadmeParseError(f"unclosed code fence ({fence}{info})")
    return blocks


def parse_readme(text: str) -> list[ReadmeCommand]:
    """Every command of the shell blocks of a README, in order (see the module docstring)."""
    cmds: list[ReadmeCommand] = []
    for info, block in _blocks(text):
        if info not in SHELL_INFOS:
            continue
        lines = [(n, s) for n, s in _logical_lines(block) if s.strip()]
        transcript = any(s.lstrip().startswith("$ ") for _, s in lines)
        i = 0
        while i < len(lines):
            n, s = lines[i]
            i += 1
            s = s.strip()
            if transcript:
                if not s.startswith("$ "):
                    continue                       # shown output of the command before
                s = s[2:].strip()
                shown = []
                while i < len(lines) and not lines[i][1].lstrip().startswith("$ "):
                    shown.append(lines[i][1].strip())
                    i += 1
                error = next((o for o in shown if o.startswith("error:")), None)
            else:
                error = None
            parts = [] if s.startswith("#") else _words(s, n)
            text_ = s.split(" #")[0].rstrip() if " #" in s else s
            for k, argv in enumerate(parts):
                cmds.append(ReadmeCommand(line=n, text=text_, argv=tuple(argv), part=k,
                                          expect_error=error if k == len(parts) - 1 else None))
    return cmds


def readme_commands(path: Path) -> list[ReadmeCommand]:
    return parse_readme(path.read_text())
