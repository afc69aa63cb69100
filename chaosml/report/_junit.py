"""JUnit XML building blocks shared by the slice and game-day reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

Suite = tuple[str, list[ET.Element]]  # a testsuite's name and its cases


def _write(path: Path, *suites: Suite) -> None:
    """One JUnit document with ``suites`` under ``testsuites``."""
    root = ET.Element("testsuites")
    for name, cases in suites:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=name,
            tests=str(len(cases)),
            failures=str(sum(c.find("failure") is not None for c in cases)),
            errors=str(sum(c.find("error") is not None for c in cases)),
            skipped=str(sum(c.find("skipped") is not None for c in cases)),
        )
        suite.extend(cases)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _case(classname: str, name: str, status: str, detail: str) -> ET.Element:
    case = ET.Element("testcase", classname=classname, name=name)
    if status == "failed":
        ET.SubElement(case, "failure", message=detail).text = detail
    elif status == "error":
        ET.SubElement(case, "error", message=detail).text = detail
    elif status == "skipped":
        ET.SubElement(case, "skipped", message=detail)
    else:
        ET.SubElement(case, "system-out").text = detail
    return case
