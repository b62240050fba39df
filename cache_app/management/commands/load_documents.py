"""manage.py load_documents PATH [--masterplan UUID]: fill the RAG document store.

PATH is either a JSONL file (one JSON object per line: ``content`` (required, non-empty
string), ``metadata`` (optional object); any other keys are folded into metadata) or a
folder whose ``*.txt`` files (recursively, sorted) become one document each, with
``{"source": <relative path>, "title": <file stem>}`` as metadata. Every input is
validated before anything is embedded; documents are embedded in batches with the
configured embedder (a progress bar on stderr) and inserted in one transaction.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from cache_app.core import keys
from cache_app.models import Masterplan
from cache_app.rag.documents import DocumentStore
from cache_app.rag.embedders import load_embedder


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text ({exc})")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path}, line {number}: invalid JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(record, dict):
            raise CommandError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        content = record.pop("content", None)
        if not isinstance(content, str) or not content.strip():
            raise CommandError(f"{path}, line {number}: 'content' must be a non-empty string")
        metadata = record.pop("metadata", {})
        if not isinstance(metadata, dict):
            raise CommandError(f"{path}, line {number}: 'metadata' must be a JSON object")
        documents.append((content, {**record, **metadata}))
    return documents


def read_text_folder(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for file in sorted(folder.rglob("*.txt")):
        if not file.is_file():
            continue
        try:
            content = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(f"{file}: not UTF-8 text ({exc})")
        if content.strip():
            documents.append((content.strip(), {"source": str(file.relative_to(folder)), "title": file.stem}))
    return documents


class Command(BaseCommand):
    help = "Load documents (a JSONL file, or a folder of .txt files) into the RAG document store."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="A .jsonl file (content, metadata per line) or a folder of .txt files.")
        parser.add_argument(
            "--masterplan", default=None, help="UUID of an existing masterplan; omit for the global corpus."
        )
        parser.add_argument("--batch-size", type=int, default=64, help="Documents embedded per batch (default 64).")
        parser.add_argument(
            "--embedder", default=None, help="Dotted path of the embedder (default MGECACHE['EMBEDDER'])."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        masterplan_id = None
        if options["masterplan"]:
            try:
                masterplan_id = keys.normalize_masterplan_id(options["masterplan"])
            except ValueError:
                raise CommandError(f"--masterplan must be a UUID, got {options['masterplan']!r}.")
            if not Masterplan.objects.filter(pk=masterplan_id).exists():
                raise CommandError(f"No masterplan with id {masterplan_id}; create it first (admin or API).")

        documents = read_text_folder(path) if path.is_dir() else read_jsonl(path)
        if not documents:
            what = "no non-empty .txt files" if path.is_dir() else "no documents"
            raise CommandError(f"{path}: {what} to load.")

        try:
            embedder = load_embedder(options["embedder"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc))
        store = DocumentStore(embedder=embedder)
        with tqdm(
            total=len(documents),
            unit="doc",
            desc=f"Embedding ({embedder.model_name})",
            file=sys.stderr,
            disable=options["verbosity"] == 0,
        ) as bar:
            created = store.add(
                documents, masterplan_id=masterplan_id, batch_size=options["batch_size"], progress=bar.update
            )
        scope = f"masterplan {masterplan_id}" if masterplan_id else "the global corpus"
        self.stdout.write(self.style.SUCCESS(f"Loaded {created} documents into {scope} ({embedder.model_name})."))
