"""Scan the image's pinned dependencies (requirements/runtime.txt) with pip-audit.

Fails (exit 1) on any known vulnerability that is not listed, with a reason, in
requirements/audit-ignore.txt. pip-audit's data (PyPI's JSON API, or OSV) must be reachable:
when no package could be checked, the scan says so plainly and exits 0 with "NOT AUDITED" (the
build machines here reach only the package index itself), so that it never reads as a pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ignored = {
        line.split("#")[0].strip()
        for line in (ROOT / "requirements/audit-ignore.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    }
    command = [
        str(Path(sys.executable).with_name("pip-audit")),
        "--disable-pip",
        "--require-hashes",
        "--progress-spinner=off",
        "--format=json",
        "-r",
        str(ROOT / "requirements/runtime.txt"),
    ]
    result = subprocess.run(
        command + [f"--ignore-vuln={v}" for v in sorted(ignored)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(f"pip-audit failed:\n{result.stderr[-3000:]}\n")
        return 1
    deps = report["dependencies"]
    skipped = [d for d in deps if d.get("skip_reason")]
    found = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
    audited = len(deps) - len(skipped)
    print(f"pip-audit: {len(deps)} pinned packages, {audited} checked, {len(skipped)} not checked")
    for name, version, vuln in found:
        fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"  VULNERABLE {name} {version}: {vuln['id']} (fixed in {fixes})")
    if found:
        return 1
    if audited == 0:
        print(
            "NOT AUDITED: the vulnerability data could not be reached from this machine "
            f"(first reason: {skipped[0]['skip_reason'] if skipped else 'none'})."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
