"""What data settings may be, as plain data (no datasets import): config checks them, the readers implement them."""

UTF8_ERRORS = ("strict", "replace")  # invalid UTF-8: stop with file and byte offset, or replace
INPUT_FORMATS = ("auto", "text", "jsonl", "csv", "tsv", "parquet")  # auto: by suffix, else by content
DOCUMENT_UNITS = ("line", "paragraph", "file")  # what one document of a .txt file is
REMAINDER_POLICIES = ("drop", "keep")  # what happens to each group's last, short block
