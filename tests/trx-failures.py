#!/usr/bin/env python3
"""Prints each failed test of a .trx file with the first lines of its message and stack trace."""
import sys
import xml.etree.ElementTree as ET

NS = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}


def main(path: str) -> int:
    root = ET.parse(path).getroot()
    failed = [r for r in root.iterfind(".//t:UnitTestResult", NS) if r.get("outcome") == "Failed"]
    for result in failed:
        print(f"FAILED {result.get('testName')} ({result.get('duration')})")
        for tag in ("Message", "StackTrace"):
            node = result.find(f".//t:ErrorInfo/t:{tag}", NS)
            if node is not None and node.text:
                for line in node.text.strip().splitlines()[:8]:
                    print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
