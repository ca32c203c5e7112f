"""Ingest component: new Sentinel-1/2 pairs from a STAC catalog into chips or scene stacks."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest_acquisitions(
    catalog: str,
    bbox: str,
    start: str,
    end: str,
    max_cloud: float,
    s1_collection: str,
    out_uri: str,
    mode: str,
    chip_size: int,
    labels: str,
    label_table: str,
    dataset: dsl.Output[dsl.Dataset],
    s2_only: bool = False,
    window_days: int = 15,
    scheduled: str = "",
) -> None:
    """Search, pair and co-register every new acquisition into ``out_uri`` (already ingested pairs are kept).

    With ``s2_only`` (scenes only) Sentinel-2 acquisitions without a Sentinel-1 partner become stacks
    without SAR, mapped from Sentinel-2 alone; otherwise they are listed as unpaired in the summary.

    The dataset artifact points at ``out_uri`` (metadata ``uri``, ``mode``, days, pair counts) and holds the
    run's summary; the data stays under the persistent prefix, so the next run only adds new pairs.

    Empty ``start``/``end`` (the mapping pipeline's recurring runs) are resolved from ``scheduled``, the
    run's scheduled time, and ``window_days`` by ``cloudlulc.products.schedule.resolve_window``, as the
    mapping step resolves them; the days used are in the metadata (``start``, ``end``).
    """
    import json

    from cloudlulc.errors import DataError
    from cloudlulc.ingest.outputs import ChipOptions
    from cloudlulc.ingest.run import IngestOptions, ingest
    from cloudlulc.ingest.stac import DEFAULT_S2_COLLECTION, SearchQuery, parse_bbox
    from cloudlulc.io.retry import ASSET_RETRY
    from cloudlulc.products.schedule import resolve_window
    from components.runtime import require_s3_credentials

    require_s3_credentials(catalog, out_uri, labels)
    first, last = resolve_window(start, end, window_days, scheduled)
    print(f"acquisitions from {first} to {last}")
    query = SearchQuery(parse_bbox(bbox), first, last, max_cloud, catalog, DEFAULT_S2_COLLECTION, s1_collection)
    options = IngestOptions(
        out=out_uri,
        mode=mode,  # type: ignore[arg-type]
        chips=ChipOptions(chip_size=chip_size),
        label_source=labels or None,
        label_table=label_table,
        retry=ASSET_RETRY,
        s2_only=s2_only,
    )
    report = ingest(query, options, progress=False)
    print(report.summary())
    if report.failed:
        raise DataError(
            out_uri,
            f"{len(report.failed)} pair(s) failed: " + "; ".join(f"{p.pair_id}: {p.error}" for p in report.failed),
        )
    done = [p for p in report.pairs if p.status != "failed"]
    if not done:
        raise DataError(catalog, f"no Sentinel-1/2 pair for bbox {bbox} between {first} and {last}")
    counts = {status: sum(p.status == status for p in report.pairs) for status in ("ingested", "already ingested")}
    dataset.metadata.update(
        {
            "uri": out_uri,
            "mode": mode,
            "start": first.isoformat(),
            "end": last.isoformat(),
            "crs": report.crs,
            "pairs_new": counts["ingested"],
            "pairs_kept": counts["already ingested"],
            "outputs_new": sum(p.outputs for p in done),
        }
    )
    with open(dataset.path, "w") as summary:
        json.dump({"summary": report.summary(), **dataset.metadata}, summary, indent=2)
