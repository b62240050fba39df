"""The proof tool: run a masterplan workload with and without mgecache and measure the difference.

``workload`` parses the JSONL format, ``executor`` runs atoms wave by wave through
``RAGEngine`` and ``LLMClient``, ``report`` turns what happened into figures, ``plot``
draws them and ``runner`` ties a baseline and a cached run together
(``manage.py run_masterplan`` is its thin command).
"""
