#!/usr/bin/env python3
"""Prints `producer results` lines (stdin, native format) as a table: one row per job."""
import json
import sys

print(f"{'custom_id':<14} {'status':<10} {'tokens':>6} {'ms':>6}  output")
for line in sys.stdin:
    r = json.loads(line)
    text = (r["text"] or r["error"] or "").replace("\n", " / ")
    tokens = r["completion_tokens"] or 0
    ms = r["latency_ms"] or 0
    print(f"{r['custom_id']:<14} {r['status']:<10} {tokens:>6} {ms:>6}  {text[:72]}")
