"""The results as a table, queried where they lie: one definition for Athena and for DuckDB.

A job's result objects (posefleet/layout.py: ``<results>/<job>/tasks/<task>.jsonl``, one
:class:`posefleet.result.ResultLine` a line) are one table, ``posefleet_results``, with the job
id as its partition column ``job``:

* on AWS, a Glue table over the results bucket (infra/components/jobs.py): JSON Lines read by
  the OpenX JSON SerDe, ``job`` a projected partition (``projection.job.type = injected``: no
  crawler, no ``MSCK REPAIR``, nothing to add per job; a query names its job in ``WHERE job =
  '...'``, and Athena reads that job's ``tasks/`` prefix only);
* locally, a DuckDB view over the local fleet's kept buckets (``.posefleet/fleet/s3/``,
  localfleet/mirror.py), :func:`duckdb_view`, with the same columns and types.

So the SQL of docs/operations.md ("Querying results where they lie") runs unchanged on both. A
100M-image job never needs ``export`` to one file to be queried.
"""

from __future__ import annotations

from posefleet.result import ResultLine

__all__ = ["COLUMNS", "PARTITION", "TABLE", "duckdb_view", "tasks_location_template"]

TABLE = "posefleet_results"
PARTITION = "job"

# (column, Hive type for Glue/Athena, DuckDB type): ResultLine's fields, in its order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("bucket", "string", "VARCHAR"),
    ("key", "string", "VARCHAR"),
    ("status", "string", "VARCHAR"),
    ("model_version", "string", "VARCHAR"),
    ("original_size", "array<int>", "INTEGER[]"),
    ("predicted_class_index", "int", "INTEGER"),
    ("predicted_class_id", "string", "VARCHAR"),
    ("predicted_class_name", "string", "VARCHAR"),
    ("confidence", "double", "DOUBLE"),
    ("all_probabilities", "map<string,double>", "MAP(VARCHAR, DOUBLE)"),
    ("error_kind", "string", "VARCHAR"),
    ("error_message", "string", "VARCHAR"),
)
if tuple(name for name, _, _ in COLUMNS) != tuple(ResultLine.model_fields):
    raise AssertionError("posefleet.results_table.COLUMNS must follow ResultLine's fields")


def tasks_location_template(results_uri: str) -> str:
    """Where one job's result objects lie, with ``${job}`` for the partition (Athena's
    ``storage.location.template``)."""
    return f"{results_uri.rstrip('/')}/${{{PARTITION}}}/tasks/"


def duckdb_view(results_dir: str) -> str:
    """``CREATE VIEW posefleet_results`` over a local copy of a results prefix
    (``results_dir/<job>/tasks/*.jsonl``), the job taken from each file's path."""
    columns = ", ".join(f"'{name}': '{duck}'" for name, _, duck in COLUMNS)
    pattern = f"{results_dir.rstrip('/')}/*/tasks/*.jsonl"
    return (
        f"CREATE OR REPLACE VIEW {TABLE} AS "
        f"SELECT * EXCLUDE (filename), "
        f"regexp_extract(filename, '/([^/]+)/tasks/[^/]+$', 1) AS {PARTITION} "
        f"FROM read_json('{pattern}', format = 'newline_delimited', filename = true, "
        f"columns = {{{columns}}})"
    )
