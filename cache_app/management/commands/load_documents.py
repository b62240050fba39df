"""manage.py load_documents PATH [--masterplan UUID]: fill the RAG document store.

PATH is either a JSONL file (one JSON object per line: ``content`` (required, non-empty
string), ``metadata`` (optional object); any other keys are folded into metadata) or a
folder whose ``*.txt`` files (recursively, sorted) become one document each, with
``{"source": <relative path>, "title": <file stem>}`` as metadata. Every input is
validated before anything is embedded (``cache_app.rag.documents.read_documents``);
documents are embedded in batches with the configured embedder (a progress bar on stderr)
and inserted in one transaction.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from cache_app.core import keys
from cache_app.models import Masterplan
from cache_app.rag.documents import DocumentFileError, DocumentStore, read_documents
from cache_app.rag.embedders import load_embedder


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
        masterplan_id = _masterplan(options["masterplan"])
        try:
            documents = read_documents(path)
            embedder = load_embedder(options["embedder"])
        except (DocumentFileError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc))
        with tqdm(
            total=len(documents),
            unit="doc",
            desc=f"Embedding ({embedder.model_name})",
            file=sys.stderr,
            disable=options["verbosity"] == 0,
        ) as bar:
            created = DocumentStore(embedder=embedder).add(
                documents, masterplan_id=masterplan_id, batch_size=options["batch_size"], progress=bar.update
            )
        scope = f"masterplan {masterplan_id}" if masterplan_id else "the global corpus"
        self.stdout.write(self.style.SUCCESS(f"Loaded {created} documents into {scope} ({embedder.model_name})."))


def _masterplan(raw: str | None) -> str | None:
    """The canonical id of an existing masterplan, None for the global corpus."""
    if not raw:
        return None
    try:
        masterplan_id = keys.normalize_masterplan_id(raw)
    except ValueError:
        raise CommandError(f"--masterplan must be a UUID, got {raw!r}.")
    if masterplan_id is None or not Masterplan.objects.filter(pk=masterplan_id).exists():
        raise CommandError(f"No masterplan with id {masterplan_id}; create it first (admin or API).")
    return masterplan_id
