#!/usr/bin/env python3
"""Fail unless every README block marked <!-- example:PATH --> equals PATH."""
import re
import sys

root = sys.argv[1]
text = open(root + "/README.md").read()
blocks = re.findall(r"<!-- example:(\S+) -->\n```c\n(.*?)\n```\n<!-- /example -->",
                    text, re.S)
if not blocks:
    sys.exit("README.md: no example block found")
bad = 0
for path, code in blocks:
    want = open(root + "/" + path).read().rstrip("\n")
    if code != want:
        print("README.md: the example differs from %s" % path)
        bad += 1
    else:
        print("README.md: example equals %s" % path)
sys.exit(1 if bad else 0)
