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
) -> None:
    """Search, pair and co-register every new acquisition into ``out_uri`` (already ingested pairs are kept).

    With ``s2_only`` (scenes only) Sentinel-2 acquisitions without a Sentinel-1 partner become stacks
    without SAR, mapped from Sentinel-2 alone; otherwise they are listed as unpaired in the summary.

    The dataset artifact points at ``out_uri`` (metadata ``uri``, ``mode``, pair counts) and holds the
    run's summary; the data stays under the persistent prefix, so the next run only adds new pairs.
    """
    import json
    from datetime import date

    from cloudlulc.errors import DataError
    from cloudlulc.ingest.outputs import ChipOptions
    from cloudlulc.ingest.run import IngestOptions, ingest
    from cloudlulc.ingest.stac import DEFAULT_S2_COLLECTION, SearchQuery, parse_bbox
    from cloudlulc.io.retry import ASSET_RETRY
    from components.runtime import require_s3_credentials

    require_s3_credentials(catalog, out_uri, labels)
    query = SearchQuery(
        parse_bbox(bbox),
        date.fromisoformat(start),
        date.fromisoformat(end),
        max_cloud,
        catalog,
        DEFAULT_S2_COLLECTION,
        s1_collection,
    )
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
        raise DataError(catalog, f"no Sentinel-1/2 pair for bbox {bbox} between {start} and {end}")
    counts = {status: sum(p.status == status for p in report.pairs) for status in ("ingested", "already ingested")}
    dataset.metadata.update(
        {
            "uri": out_uri,
            "mode": mode,
            "crs": report.crs,
            "pairs_new": counts["ingested"],
            "pairs_kept": counts["already ingested"],
            "outputs_new": sum(p.outputs for p in done),
        }
    )
    with open(dataset.path, "w") as summary:
        json.dump({"summary": report.summary(), **dataset.metadata}, summary, indent=2)
