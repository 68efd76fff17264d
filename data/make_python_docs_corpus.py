"""Regenerate course_utils/corpus/python_docs.txt from the running Python's pydoc_data.topics.

The shipped file was made with CPython 3.11.7; another Python version gives different text (and checksum), so
course_utils.text.CORPORA records the checksum of the shipped file, not of what this script makes elsewhere."""
import hashlib
import sys
from pathlib import Path

import pydoc_data.topics as topics

text = "\n\n".join(topics.topics[key].strip() for key in sorted(topics.topics)) + "\n"
out = Path(__file__).resolve().parents[1] / "course_utils" / "corpus" / "python_docs.txt"
out.write_text(text, encoding="utf-8")
data = out.read_bytes()
print(f"{out}: {len(text):,} characters, {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()} (Python {sys.version.split()[0]})")
