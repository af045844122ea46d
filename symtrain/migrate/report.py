"""Findings of ``symtrain migrate``: what was not translated (or needs a human look), with file and line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# untranslated: left as it was, fails loudly under PyTensor; removed: deleted (a no-op in PyTensor);
# changed: rewritten in a way that can change behaviour (a mode, an encoding, a list(), a division...);
# review: left as it was (or rewritten by an assumption) for a human to confirm.
KINDS = ("untranslated", "removed", "changed", "review")


@dataclass(frozen=True, order=True)
class Finding:
    """One report line: ``path:line: [kind] message``."""

    path: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.kind}] {self.message}"


def format_report(findings: Iterable[Finding]) -> str:
    """The report as text: one finding per line, sorted by file and line, then a count per kind."""
    items = sorted(set(findings))
    if not items:
        return "symtrain migrate: nothing left to translate by hand\n"
    lines = [str(f) for f in items]
    counts = {k: sum(f.kind == k for f in items) for k in KINDS}
    lines.append("symtrain migrate: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return "\n".join(lines) + "\n"
