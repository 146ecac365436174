"""Ingestion: a folder of CIFs or a table of structures → a records file plus rejects.

Input A, :func:`ingest_folder`: CIF files found recursively (the COD mirror layout
``cif/1/00/00/1000000.cif`` works; the record id is the file stem), with optional text by id:

- a metadata JSON Lines file whose lines carry ``id`` (COD id) or ``doi`` and any of ``title``,
  ``abstract``, ``keywords`` (a list, or one string split on ``;``), ``year``; a line is found by
  the record's id or else by its DOI (from the CIF or the COD table);
- the COD metadata table as the official CLaSP pipeline downloads it (a CSV export of COD's SQL
  ``data`` table: ``file`` is the COD id, plus ``title``, ``doi``, ``year``, ``journal``,
  ``mineral``...). Given a table, the structures are the table's rows, in its order, read from
  the mirror layout under the folder (``<folder>/1/00/00/1000000.cif``), not found by walking it;
- an abstracts CSV as the official ``retrieve_abstract.py`` writes it (Crossref answers:
  ``DOI``, ``File`` = COD id, ``Title``, ``Abstract``), joined by COD id.

Metadata wins over the COD table, which wins over the abstracts CSV; all win over the CIF's own
fields. A field is taken from the first of these that has it (non-empty); between metadata lines,
the one found by id wins over the one found by DOI.

Input B, :func:`ingest_table`: a CSV or JSON Lines table with a ``cif`` column (CIF text) or a
``path`` column (relative to the table's folder), an ``id`` column (else ``material_id``, else
the row number), optional text columns ``title``, ``abstract``, ``keywords``, ``doi``; every
other numeric column goes into ``meta`` (e.g. perov_5's ``heat_ref``, ``dir_gap``).

Both write the records (gzip JSON Lines, :mod:`clasp_pl.data.records`), the rejects as JSON
Lines (``source``, ``id``, ``reason``, ``message``) and return a summary of counts per reason.
Bad input never raises: every problem becomes a reject. Work is spread over ``workers``
processes with the output order equal to the input order.

Bounded and resumable:

- each file is read by :func:`~clasp_pl.data.cif.parse_cif` with the options of
  :class:`IngestOptions` (default: disorder kept with the ``mixed`` policy, the stated formula
  checked, at most ``max_atoms`` sites and ``5 × max_atoms`` atoms in the conventional cell);
- each file gets ``time_limit`` seconds (default 60; reject ``timeout``), and each worker
  process may map at most ``worker_memory_gb`` GiB more than after its start-up (default 4;
  reject ``out_of_memory``), see :mod:`clasp_pl.data.limits`;
- the output is written in shards with a manifest and assembled at the end; a killed run that is
  started again with the same inputs and options resumes after its last finished shard and
  writes the same bytes as an uninterrupted run (:mod:`clasp_pl.data.shards`).

How a record was read is kept in its ``meta`` when it was not plain: ``n_disordered_sites``
(mixed or partially occupied sites), ``n_dropped_sites`` (vacancy-majority sites removed by the
``majority`` policy), ``n_repeated_sites`` (atoms listed twice at one position, counted once),
``primitive_cell`` (the primitive cell replaced a too large conventional one), ``n_dummy_sites`` (dummy atoms and centroids dropped), ``text_encoding`` (``cp1252`` or
``latin-1`` when the bytes were not UTF-8), ``repaired_syntax`` (a multi-line quoted value or a
value-less last tag was repaired), ``assumed_p1`` (no symmetry information) and
``hydrogen_not_located`` (the stated formula has H, no site does; H was exempt from the check).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from clasp_pl.data.cif import (
    DEFAULT_MAX_ATOMS,
    CifError,
    OccupancyPolicy,
    ParsedCif,
    Reader,
    decode_cif_bytes,
    parse_cif,
    read_cif_text,
)
from clasp_pl.data.limits import TimeLimitExceeded, limit_address_space, time_limit
from clasp_pl.data.parallel import parallel_map
from clasp_pl.data.records import CrystalRecord, paper_group, write_records
from clasp_pl.data.rejects import Reject
from clasp_pl.data.shards import DEFAULT_SHARD_SIZE, ShardedOutput, run_key

TEXT_COLUMNS = ("title", "abstract", "keywords", "doi")
_NOT_META = {"", "id", "material_id", "cif", "path", "year", *TEXT_COLUMNS}
COD_META_COLUMNS = ("journal", "mineral")
_MARKUP = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


DEFAULT_TIME_LIMIT = 60.0  # s per file
DEFAULT_WORKER_MEMORY_GB = 4.0  # GiB of address space a worker may add after its start-up


@dataclass(frozen=True)
class IngestOptions:
    """How each structure is read (see :mod:`clasp_pl.data.cif`) and bounded.

    Attributes:
        reader, occupancy, max_atoms, max_cell_atoms, check_formula: passed to
            :func:`~clasp_pl.data.cif.parse_cif` (``max_cell_atoms=None``: 5 × ``max_atoms``;
            ``check_formula``: compare with ``_chemical_formula_sum``).
        require_text: reject a structure without title or abstract (``missing_text``).
        time_limit: seconds one file may take (``timeout`` reject); 0 disables it. See
            :func:`clasp_pl.data.limits.time_limit` for how it is enforced.
        worker_memory_gb: address space (GiB) each worker process may add after its start-up
            (``out_of_memory`` reject); 0 disables it. Applied only with ``workers > 1``, in
            the workers.
    """

    reader: Reader = "gemmi"
    occupancy: OccupancyPolicy = "mixed"
    max_atoms: int = DEFAULT_MAX_ATOMS
    max_cell_atoms: int | None = None
    check_formula: bool = True
    require_text: bool = True
    time_limit: float = DEFAULT_TIME_LIMIT
    worker_memory_gb: float = DEFAULT_WORKER_MEMORY_GB


@dataclass
class Job:
    """One structure to ingest: CIF text or a CIF path, plus text and meta overrides.

    Attributes:
        text: text fields (``title``, ``abstract``, ``keywords``, ``doi``, ``year``,
            ``journal``, ``mineral``) of a table row, the COD table or the abstracts CSV; they
            win over the CIF's own (see :func:`apply_text`).
        metadata: the metadata file's line for this id, applied by :func:`run_jobs` after the
            line found by DOI, so it wins over that line and over ``text``.
        meta: other values kept in the record's ``meta`` (a table's numeric columns).
    """

    id: str
    source: str
    cif: str | None = None
    path: str | None = None
    text: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def rejects_path_for(out: str | Path) -> Path:
    """Default rejects file next to ``out``: ``x/name.jsonl.gz`` → ``x/name.rejects.jsonl``."""
    out = Path(out)
    stem = out.name.removesuffix(".gz").removesuffix(".jsonl")
    return out.with_name(stem + ".rejects.jsonl")


def ingest_folder(
    folder: str | Path,
    out: str | Path,
    *,
    metadata: str | Path | None = None,
    cod_table: str | Path | None = None,
    abstracts: str | Path | None = None,
    rejects: str | Path | None = None,
    options: IngestOptions = IngestOptions(),
    workers: int = 1,
    progress: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Ingest every ``*.cif`` under ``folder`` (recursively, sorted by path) into ``out``, or,
    given a COD table, the table's rows from the COD mirror at ``folder``.

    Returns:
        The summary of :func:`run_jobs`.
    """
    by_id, by_doi = load_metadata(metadata) if metadata else ({}, {})
    cod = load_cod_table(cod_table) if cod_table else {}
    crossref = load_abstracts(abstracts) if abstracts else {}
    if cod_table:
        paths = [cod_mirror_path(folder, cod_id) for cod_id in cod]
    else:
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() == ".cif")
    jobs = []
    for path in paths:
        sources = (crossref.get(path.stem, {}), cod.get(path.stem, {}))
        text = {key: value for entry in sources for key, value in entry.items() if value}
        metadata = by_id.get(path.stem, {})
        jobs.append(Job(path.stem, str(path), path=str(path), text=text, metadata=metadata))
    return run_jobs(
        jobs,
        out,
        rejects,
        options,
        workers=workers,
        progress=progress,
        metadata_by_doi=by_doi,
        shard_size=shard_size,
    )


def ingest_table(
    table: str | Path,
    out: str | Path,
    *,
    rejects: str | Path | None = None,
    options: IngestOptions = IngestOptions(require_text=False),
    workers: int = 1,
    progress: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Ingest the rows of a CSV or JSON Lines table (see the module docstring) into ``out``."""
    jobs = list(table_jobs(table))
    return run_jobs(
        jobs, out, rejects, options, workers=workers, progress=progress, shard_size=shard_size
    )


def load_metadata(path: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Metadata lines indexed by id (``id`` or ``cod_id``) and by lower-case DOI."""
    by_id: dict[str, dict] = {}
    by_doi: dict[str, dict] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            entry = json.loads(line)
            key = entry.get("id", entry.get("cod_id"))
            if key is not None:
                by_id[str(key)] = entry
            if entry.get("doi"):
                by_doi[doi_key(entry["doi"])] = entry
    return by_id, by_doi


def doi_key(doi: Any) -> str:
    """A DOI as an index key: stripped and lower-case (DOIs are case-insensitive)."""
    return str(doi).strip().lower()


def normalise_keywords(value: Any) -> list[str]:
    """Keywords of a table cell or metadata field: a list, or one string split on ``;``; each
    stripped, empty ones dropped (``"rock; salt"`` -> ``["rock", "salt"]``)."""
    if not value:
        return []
    items = value.split(";") if isinstance(value, str) else value
    return [str(item).strip() for item in items if str(item).strip()]


def cod_mirror_path(root: str | Path, cod_id: str) -> Path:
    """Where a COD mirror keeps a CIF: ``1000041`` -> ``<root>/1/00/00/1000041.cif``."""
    return Path(root) / cod_id[0] / cod_id[1:3] / cod_id[3:5] / f"{cod_id}.cif"


def _cod_id(value: Any) -> str:
    """A COD id as text: ``1000041``, also from ``1000041.0`` (a float column in a CSV)."""
    text = str(value).strip()
    return text.removesuffix(".0") if text.removesuffix(".0").isdigit() else text


def load_cod_table(path: str | Path) -> dict[str, dict[str, str]]:
    """Text and meta columns of a COD ``data`` table CSV by COD id, in table order.

    Returns:
        ``{cod_id: {"title", "doi", "year", "journal", "mineral"}}`` (the columns present).
    """
    table: dict[str, dict[str, str]] = {}
    for row in _table_rows(Path(path)):
        if row.get("file"):
            columns = ("title", "doi", "year", *COD_META_COLUMNS)
            table[_cod_id(row["file"])] = {key: row[key] for key in columns if row.get(key)}
    return table


def load_abstracts(path: str | Path) -> dict[str, dict[str, str]]:
    """Crossref titles and abstracts (``DOI``, ``File``, ``Title``, ``Abstract``) by COD id;
    the JATS markup of Crossref abstracts (``<jats:p>``) is removed."""
    abstracts: dict[str, dict[str, str]] = {}
    for row in _table_rows(Path(path)):
        if row.get("File"):
            abstract = _MARKUP.sub(" ", row.get("Abstract") or "")
            abstracts[_cod_id(row["File"])] = {
                "doi": row.get("DOI"),
                "title": row.get("Title"),
                "abstract": _SPACES.sub(" ", abstract).strip(),
            }
    return abstracts


def table_jobs(table: str | Path) -> Iterator[Job]:
    """One :class:`Job` per row of a CSV or JSON Lines table."""
    table = Path(table)
    for number, row in enumerate(_table_rows(table)):
        record_id = str(row.get("id") or row.get("material_id") or f"{table.stem}-{number}")
        path = row.get("path")
        yield Job(
            id=record_id,
            source=f"{table}:{number}",
            cif=row.get("cif") or None,
            path=str(table.parent / path) if path else None,
            text={key: row[key] for key in (*TEXT_COLUMNS, "year") if row.get(key)},
            meta=_numeric_meta(row),
        )


def _table_rows(table: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV or JSON Lines file; undecodable bytes survive as surrogates."""
    with open(table, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if table.suffix.lower() in (".jsonl", ".json"):
            for line in handle:
                if line.strip():
                    yield json.loads(line)
        else:
            csv.field_size_limit(sys.maxsize)
            yield from csv.DictReader(handle)


def _numeric_meta(row: dict[str, Any]) -> dict[str, int | float]:
    meta: dict[str, int | float] = {}
    for key, value in row.items():
        if key in _NOT_META or value is None or value == "":
            continue
        number = _as_number(value)
        if number is not None:
            meta[key] = number
    return meta


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    for kind in (int, float):
        try:
            return kind(str(value))
        except ValueError:
            continue
    return None


def run_jobs(
    jobs: list[Job],
    out: str | Path,
    rejects: str | Path | None,
    options: IngestOptions,
    *,
    workers: int = 1,
    progress: bool = True,
    metadata_by_doi: dict[str, dict[str, Any]] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Convert jobs to records (in order) and write records and rejects; returns the summary.

    The output is written in shards of ``shard_size`` jobs and resumed after an interruption
    (see :mod:`clasp_pl.data.shards`). Metadata lines are applied here, in the parent process, so
    the (possibly large) index of lines by DOI is never sent to the workers: the DOI is known
    only once the CIF is read.

    Returns:
        ``{"total", "kept", "rejected": {reason: count}, "out", "rejects", "resumed_shards"}``.
    """
    metadata_by_doi = metadata_by_doi or {}
    key = run_key(
        [
            {"options": asdict(options), "metadata_by_doi": sorted(metadata_by_doi.items())},
            *(asdict(job) for job in jobs),
        ]
    )
    output = ShardedOutput(out, rejects or rejects_path_for(out), key, shard_size)
    remaining = jobs[output.done_items :]
    convert = partial(job_to_record, options=options)
    results = parallel_map(convert, remaining, workers=workers, progress=progress, desc="ingest")
    output.write(
        _finish(job, result, metadata_by_doi, options.require_text)
        for job, result in zip(remaining, results, strict=True)
    )
    return output.assemble()


def _finish(
    job: Job,
    result: CrystalRecord | Reject,
    metadata_by_doi: dict[str, dict[str, Any]],
    require_text: bool,
) -> CrystalRecord | Reject:
    """Apply the metadata lines (found by DOI, then by id: the id's line wins) over the record's
    text, then the ``require_text`` rule."""
    if isinstance(result, Reject):
        return result
    by_doi = metadata_by_doi.get(doi_key(job.metadata.get("doi") or result.doi), {})
    for metadata in (by_doi, job.metadata):
        apply_text(result, metadata)
    if require_text and not result.has_text:
        return Reject(job.source, job.id, "missing_text", f"{job.source}: no title or abstract")
    return result


def write_outputs(
    results: Iterable[CrystalRecord | Reject], out: str | Path, rejects: str | Path | None
) -> dict[str, Any]:
    """Stream records into ``out`` and rejects into ``rejects``; returns the summary.

    Returns:
        ``{"total", "kept", "rejected": {reason: count}, "out", "rejects"}``.
    """
    rejects_path = Path(rejects) if rejects else rejects_path_for(out)
    rejects_path.parent.mkdir(parents=True, exist_ok=True)
    reasons: Counter[str] = Counter()
    with open(rejects_path, "w", encoding="utf-8") as reject_file:

        def records() -> Iterator[CrystalRecord]:
            for result in results:
                if isinstance(result, Reject):
                    reasons[result.reason] += 1
                    reject_file.write(result.to_json() + "\n")
                else:
                    yield result

        kept = write_records(records(), out)
    return {
        "total": kept + sum(reasons.values()),
        "kept": kept,
        "rejected": dict(sorted(reasons.items())),
        "out": str(out),
        "rejects": str(rejects_path),
    }


def job_to_record(job: Job, options: IngestOptions) -> CrystalRecord | Reject:
    """Read one job's CIF and attach its text; never raises for bad input.

    The file gets ``options.time_limit`` seconds (``timeout``); in a worker process the first
    call also limits the process's address space (``out_of_memory``).
    ``options.require_text`` is applied afterwards by :func:`run_jobs`.
    """
    _limit_worker_memory(options.worker_memory_gb)
    try:
        with time_limit(options.time_limit):
            text, encoding = _job_text(job)
            parsed = parse_cif(
                text,
                job.source,
                reader=options.reader,
                occupancy=options.occupancy,
                max_atoms=options.max_atoms,
                max_cell_atoms=options.max_cell_atoms,
                check_stated_formula=options.check_formula,
            )
            parsed.encoding = encoding
            return _record(job, parsed)
    except CifError as err:
        return err.to_reject(job.source, job.id)
    except TimeLimitExceeded:
        message = f"{job.source}: took longer than the time limit of {options.time_limit:g} s"
        return Reject(job.source, job.id, "timeout", message)
    except MemoryError:
        message = (
            f"{job.source}: ran out of the worker memory limit ({options.worker_memory_gb:g} GiB)"
        )
        return Reject(job.source, job.id, "out_of_memory", message)
    except Exception as err:  # noqa: BLE001 - a reader bug must not stop a 400k-file ingestion
        return Reject(job.source, job.id, "unparseable", f"{job.source}: {type(err).__name__}")


_MEMORY_LIMITED = False


def _limit_worker_memory(gigabytes: float) -> None:
    """Limit this process's address space once, if it is a worker of a process pool."""
    global _MEMORY_LIMITED
    if _MEMORY_LIMITED or multiprocessing.parent_process() is None:
        return
    _MEMORY_LIMITED = True
    limit_address_space(int(gigabytes * 2**30) if gigabytes > 0 else None)


def _job_text(job: Job) -> tuple[str, str]:
    """The job's CIF text (read from its path when needed) and its encoding.

    Bytes that are not UTF-8 are decoded with the fallbacks of
    :func:`~clasp_pl.data.cif_text.decode_cif_bytes` (a table cell arrives here with its undecodable
    bytes kept as surrogates).
    """
    if job.cif is not None:
        try:
            job.cif.encode("utf-8")
        except UnicodeEncodeError:
            return decode_cif_bytes(job.cif.encode("utf-8", "surrogateescape"))
        return job.cif, "utf-8"
    if job.path is None:
        raise CifError("unparseable", f"{job.source}: neither a cif nor a path column")
    return read_cif_text(job.path)


def _record(job: Job, parsed: ParsedCif) -> CrystalRecord:
    """Record of a parsed CIF, with the job's text applied over the CIF's own fields."""
    cif = parsed.text
    meta = {"year": cif.year, "journal": cif.journal, **job.meta, **resolution_meta(parsed)}
    sites = parsed.sites
    record = CrystalRecord.from_sites(
        job.id,
        sites.lattice,
        sites.frac,
        sites.species,
        sites.occupancies,
        title=cif.title,
        doi=cif.doi,
        source=job.source,
        meta={key: value for key, value in meta.items() if value not in (None, "")},
    )
    apply_text(record, job.text)
    return record


def resolution_meta(parsed: ParsedCif) -> dict[str, int | bool | str]:
    """How a CIF was read, when it was not plain (see the module docstring): disorder, size,
    repeated and dummy atoms, a fallback text encoding, repaired syntax, assumed P1 symmetry, and
    hydrogen exempt from the formula check."""
    notes: dict[str, int | bool | str] = {
        "n_disordered_sites": parsed.n_disordered,
        "n_dropped_sites": parsed.n_dropped,
        "n_repeated_sites": parsed.sites.n_repeated,
        "primitive_cell": parsed.primitive,
        "n_dummy_sites": parsed.n_dummy_sites,
        "text_encoding": parsed.encoding if parsed.encoding != "utf-8" else "",
        "repaired_syntax": parsed.repaired_syntax,
        "assumed_p1": parsed.assumed_p1,
        "hydrogen_not_located": parsed.hydrogen_not_located,
    }
    return {key: value for key, value in notes.items() if value}


def apply_text(record: CrystalRecord, text: dict[str, Any]) -> None:
    """Overwrite a record's text with the non-empty fields of ``text`` (a table row, a COD table
    or abstracts entry, a metadata line): ``title``, ``abstract``, ``keywords`` (see
    :func:`normalise_keywords`) and ``doi``, and ``year``, ``journal``, ``mineral`` into
    ``meta``. The record's paper group follows its (new) DOI and title."""
    for name in ("title", "abstract", "doi"):
        if text.get(name):
            setattr(record, name, str(text[name]))
    if keywords := normalise_keywords(text.get("keywords")):
        record.keywords = keywords
    for name in ("year", *COD_META_COLUMNS):
        if text.get(name):
            record.meta[name] = text[name]
    record.group = paper_group(record.doi, record.title, record.id)
