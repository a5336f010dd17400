"""What `cestab check` shows: a terminal table, JUnit XML for CI systems, Markdown for
GitHub's job summary. Each reads a `check.Gate` and never runs anything.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.gate.check import Gate
from harness.errors import UsageError
from harness.store.runfolder import write_atomic

#: Rows per verdict the terminal and the job summary list before "... and N more"
#: (regressions are always listed in full).
SHOWN = 40


def side(report_row, prefix: str) -> str:
    """One side of a group, e.g. 'ok 0.5/1.2 ulps' or 'nonfinite 3/inf ulps, 12 non-finite'."""
    status = report_row[f"{prefix}_status"]
    if status is None or (isinstance(status, float) and math.isnan(status)):
        return "-"
    text = f"{status} {_u(report_row[f'{prefix}_loss_ulps'])}/{_u(report_row[f'{prefix}_grad_ulps'])} ulps"
    if report_row[f"{prefix}_nonfinite"]:
        text += f", {int(report_row[f'{prefix}_nonfinite'])} non-finite"
    if report_row[f"{prefix}_failed"]:
        text += f", {int(report_row[f'{prefix}_failed'])} failed"
    return text


def _u(x) -> str:
    x = float(x)
    return "-" if math.isnan(x) else "inf" if math.isinf(x) else f"{x:.3g}"


def changes(gate: Gate):
    """The rows worth showing: every regression, then up to SHOWN of each other change."""
    report = gate.report
    shown, hidden = [], {}
    for verdict in ("regression", "missing", "new", "improved"):
        part = report[report["verdict"] == verdict]
        limit = len(part) if verdict == "regression" else SHOWN
        shown.extend(part.head(limit).to_dict("records"))
        if len(part) > limit:
            hidden[verdict] = len(part) - limit
    return shown, hidden


def headline(gate: Gate) -> str:
    c = gate.count
    text = (
        f"cestab check: {c('regression')} regressions, {c('missing')} missing, {c('new')} new, "
        f"{c('improved')} improved, {c('same')} unchanged (rtol {gate.rtol:g}, slack {gate.slack:g} ulps)"
    )
    if c("improved") and not gate.updated:
        text += f"\n  the baseline is stale where improved: cestab check --baseline {gate.baseline_path} ... --update-baseline"
    if gate.updated:
        text += f"\n  baseline written: {gate.baseline_path} ({len(gate.report) - c('missing')} groups)"
    return text


def format_table(gate: Gate) -> str:
    """The terminal view: notes, the changed groups (baseline -> now, why, version change), the headline."""
    lines = [f"note: {n}" for n in gate.notes]
    shown, hidden = changes(gate)
    if shown:
        header = ("verdict", "adapter", "dtype", "regime", "baseline", "now", "why", "version change")
        cells = [(r["verdict"], r["adapter"], r["dtype"], r["regime"], side(r, "base"), side(r, "now"), r["why"],
                  r["version_change"]) for r in shown]
        widths = [max(len(str(row[i])) for row in [header, *cells]) for i in range(len(header) - 2)]
        for row in [header, *cells]:
            change = f"  [{row[-1]}]" if row[-1] else ""
            lines.append(("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-2]) + change).rstrip())
    for verdict, n in hidden.items():
        lines.append(f"... and {n} more {verdict}")
    lines.append(headline(gate))
    return "\n".join(lines)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 cannot hold (control characters): ElementTree
    writes them as they are, and no CI system could parse the report (found by
    tests/test_cli_fuzz.py: an adapter name with a \\x00 in a baseline)."""
    return _NOT_XML.sub("\ufffd", str(text))


def junit_xml(gate: Gate) -> str:
    """One testcase per adapter x dtype x regime (classname: the adapter), a failure per
    regression, skipped for missing; what CI systems render as a test report."""
    report = gate.report
    suite = ET.Element("testsuite", name="cestab check", tests=str(len(report)),
                       failures=str(gate.count("regression")), skipped=str(gate.count("missing")), errors="0")
    for r in report.to_dict("records"):
        case = ET.SubElement(suite, "testcase", classname=r["adapter"], name=f"{r['dtype']} {r['regime']}")
        detail = f"baseline: {side(r, 'base')}\nnow: {side(r, 'now')}"
        if r["version_change"]:
            detail += f"\nversion change: {r['version_change']}"
        if r["verdict"] == "regression":
            ET.SubElement(case, "failure", message=r["why"], type="regression").text = detail
        elif r["verdict"] == "missing":
            ET.SubElement(case, "skipped", message=r["why"])
        elif r["verdict"] in ("new", "improved"):
            ET.SubElement(case, "system-out").text = f"{r['verdict']}: {r['why']}\n{detail}"
    root = ET.Element("testsuites")
    root.append(suite)
    for element in root.iter():  # names come from the baseline file and the run: keep the XML well-formed
        element.attrib = {k: _xml_text(v) for k, v in element.attrib.items()}
        if element.text:
            element.text = _xml_text(element.text)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, gate: Gate) -> None:
    path = Path(path)
    text = junit_xml(gate)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(gate: Gate) -> str:
    """The GitHub job summary: the headline, the notes and a table of the changed groups."""
    head = headline(gate).splitlines()
    mark = ":x:" if gate.exit_code else ":white_check_mark:"
    lines = [f"### {mark} {head[0]}", ""] + [f"- {_md(x.strip())}" for x in head[1:] + gate.notes]
    shown, hidden = changes(gate)
    if shown:
        lines += ["", "| verdict | adapter | dtype | regime | baseline | now | why | version change |", "|---|---|---|---|---|---|---|---|"]
        for r in shown:
            cells = (r["verdict"], f"`{r['adapter']}`", r["dtype"], r["regime"], side(r, "base"), side(r, "now"), r["why"], r["version_change"])
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    for verdict, n in hidden.items():
        lines.append(f"\n... and {n} more {verdict}")
    if gate.run_dir:
        lines.append(f"\nrun folder: `{gate.run_dir}`")
    return "\n".join(lines) + "\n\n"


def append_step_summary(gate: Gate, environ=os.environ) -> str | None:
    """Append the Markdown to $GITHUB_STEP_SUMMARY when it is set (GitHub Actions sets it)."""
    path = environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown(gate))
    except OSError as exc:
        raise UsageError(f"cannot append to GITHUB_STEP_SUMMARY {path}: {exc.strerror or exc}") from None
    return path
