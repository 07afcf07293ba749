#!/usr/bin/env python3
"""Tests for scripts/bench-report.py's keep_sections (bench-peers.sh keeps the sections other
scripts own when it rewrites BENCHMARKS.md). Run: python3 scripts/test_bench_report.py; also
checks the real BENCHMARKS.md: every marked section in it survives a rewrite."""

import importlib.util
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_report", os.path.join(HERE, "bench-report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

OLD = """# Benchmarks
## Tables
old figures
<!-- bench-relay: begin -->
## Relay front
relay figures
<!-- bench-relay: notes begin -->
hand notes
<!-- bench-relay: notes end -->
<!-- bench-relay: end -->

<!-- bench-rtt: begin -->
## Round trips
rtt table
<!-- bench-rtt: end -->

## Profile
old profile
## Commands
old commands
"""

NEW = """# Benchmarks
## Tables
new figures

## Profile
new profile
## Commands
new commands
"""


class KeepSections(unittest.TestCase):
    def test_foreign_sections_survive_in_order_before_profile(self):
        text = report.keep_sections(NEW, OLD)
        self.assertIn("new figures", text)
        self.assertNotIn("old figures", text)
        relay = text.index("<!-- bench-relay: begin -->")
        rtt = text.index("<!-- bench-rtt: begin -->")
        self.assertLess(text.index("new figures"), relay)
        self.assertLess(relay, rtt)
        self.assertLess(rtt, text.index("## Profile"))
        self.assertIn("hand notes\n<!-- bench-relay: notes end -->\n<!-- bench-relay: end -->", text)
        self.assertEqual(text.count("<!-- bench-rtt: end -->"), 1)
        self.assertTrue(text.endswith("new commands\n"))

    def test_idempotent_and_no_duplicates(self):
        once = report.keep_sections(NEW, OLD)
        self.assertEqual(report.keep_sections(once, OLD), once)
        self.assertEqual(once.count("<!-- bench-relay: begin -->"), 1)

    def test_owned_sections_are_not_kept(self):
        text = report.keep_sections(NEW, OLD, owned=("rtt",))
        self.assertNotIn("bench-rtt", text)
        self.assertIn("<!-- bench-relay: begin -->", text)

    def test_nothing_to_keep_and_no_profile(self):
        self.assertEqual(report.keep_sections(NEW, "# nothing marked\n"), NEW)
        text = report.keep_sections("# only\n", OLD)
        self.assertTrue(text.startswith("# only\n\n<!-- bench-relay: begin -->"))

    def test_an_unterminated_section_is_not_taken(self):
        broken = "<!-- bench-x: begin -->\nhalf\n"
        self.assertEqual(report.keep_sections(NEW, broken), NEW)

    def test_the_real_file_keeps_every_section(self):
        path = os.path.join(HERE, "..", "BENCHMARKS.md")
        if not os.path.exists(path):
            self.skipTest("no BENCHMARKS.md")
        with open(path, encoding="utf-8") as f:
            old = f.read()
        names = [m.group(1) for m in report.SECTION.finditer(old)]
        text = report.keep_sections(NEW, old)
        for m in report.SECTION.finditer(old):
            self.assertIn(m.group(0).rstrip("\n"), text)
        self.assertEqual([m.group(1) for m in report.SECTION.finditer(text)], names)


if __name__ == "__main__":
    unittest.main()
