"""Names that must survive a restore and a capture, shared by the unit and the integration tests."""

# Names an archive may hold: UTF-8, no control characters.
ARCHIVE_NAMES = [
    "notes\\2024.md",
    "\\",
    "-leading-dash.md",
    "--",
    " spaces  around ",
    "quotes ' and \"",
    "$(touch pwned) `touch pwned`; *?[a]",
    "caf\u00e9 \u2603",
    "x" * 255,
]
