"""The bad-input corpus: one case file per bad input (see README.md), and their loader."""
