#!/usr/bin/env python3
"""Queries ESXi over its SOAP API at /sdk (the REST API answers 503 behind the proxy)."""
import sys

if __name__ == "__main__":
    print("esxi-soap: would query", sys.argv[1:] or ["summary"])
