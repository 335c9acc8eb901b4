"""Stage 8, reports: what the store holds, as documents for people.

- `show`: building a report view (from the registry, built-in or a team's own) and
  rendering it to the terminal or a file;
- `render/`: the renderers of report documents (terminal, Markdown, HTML, JSON).

The document model itself (`harness.document`) stays at the top level: it is the value
the `ReportView` contract returns, so the contracts below the stages name it.
"""
