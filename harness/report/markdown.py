"""The report as Markdown: `stability.md`, figures referenced as `figures/<name>.png`."""

from __future__ import annotations

from harness.report.text import FIGURE_TITLES


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(text) for text, _ in row) + " |")
    return lines


def render(blocks) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "pre":
            lines += ["```", block[1], "```", ""]
        elif kind == "table":
            lines += _table(block[1], block[2]) + [""]
        elif kind == "figure":
            lines += [f"![{FIGURE_TITLES[block[1]]}](figures/{block[1]})", ""]
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n".join(lines).rstrip("\n") + "\n"
