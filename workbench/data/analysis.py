"""Analyse a dataset's splits together: statistics, findings and a sample index, cached on disk.

`analyse_dataset` is what the Data tab and the "/dataset_stats" and "/dataset_findings" APIs call. A report is
cached under ``<cache_dir>/datasets/`` by a key made of the annotation files' content hashes (folder listings
for ImageFolder and mask folders), the image folders' modification times and the options, so reopening a
dataset reads one JSON file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from workbench.data import checks, stats
from workbench.data.checks import Finding
from workbench.data.columnar import CocoTable, file_sha256, load_coco_table
from workbench.data.scan import (
    FolderLayout,
    ProgressCallback,
    scan_imagefolder,
    scan_images,
    scan_mask,
    scan_mask_folder,
    scan_panoptic_png,
)
from workbench.errors import DatasetError
from workbench.settings import Settings

logger = logging.getLogger(__name__)

# Bump when the report's content changes, so old cache entries are not read.
REPORT_VERSION = 1
SPLITS = ("train", "val", "test")
FORMATS = ("coco", "coco_panoptic", "imagefolder", "mask_folder")


@dataclass
class SplitSource:
    """The location of one split on disk."""

    # COCO: the image folder (empty means found from the annotation file). ImageFolder: the root.
    # Mask folder: the images folder, or a root that contains images/ and masks/.
    images: str = ""
    # COCO and COCO panoptic: the JSON file. Mask folder: the masks folder (optional).
    annotations: str = ""


@dataclass
class DatasetSource:
    """A dataset's format and its splits (any of train, val and test)."""

    splits: dict[str, SplitSource]
    # "coco", "coco_panoptic", "imagefolder", "mask_folder", or "" to detect it from the paths.
    format: str = ""

    def resolved_format(self) -> str:
        """Return the format, detected from the first split's paths when not given."""
        if self.format:
            if self.format not in FORMATS:
                raise DatasetError(f"dataset format {self.format!r} is unknown; expected one of {', '.join(FORMATS)}, "
                                   "or empty to detect it from the paths.")
            return self.format
        split = next(iter(self.splits.values()))
        if split.annotations.lower().endswith(".json"):
            return "coco"
        images = Path(split.images).expanduser()
        if split.annotations or ((images / "images").is_dir() and (images / "masks").is_dir()):
            return "mask_folder"
        return "imagefolder"


@dataclass
class AnalysisOptions:
    """Choices that change the result, and so are part of the cache key."""

    # Decode every image (finds truncated files; slower). False reads headers only.
    decode_images: bool = True
    imbalance_ratio: float = checks.DEFAULT_IMBALANCE_RATIO
    # Mask label value that means "ignore" (data.ignore_index in the training config).
    ignore_index: int = 255


@dataclass
class DatasetReport:
    """Everything the Data tab shows about a dataset."""

    format: str
    source: dict[str, Any]
    stats: dict[str, dict[str, Any]]
    findings: list[Finding]
    # One entry per image: split, key (COCO image id or relative path), path, classes, finding codes.
    samples: list[dict[str, Any]]
    # Per split: the annotation file's content hash and path (COCO), used by the fixes and the sample viewer.
    annotation_files: dict[str, dict[str, str]] = field(default_factory=dict)
    cache_key: str = ""
    seconds: float = 0.0
    from_cache: bool = False

    def stats_json(self) -> dict[str, Any]:
        """Return the statistics as the "/dataset_stats" API sends them."""
        return {
            "format": self.format,
            "source": self.source,
            "summary": stats.summary_table(self.stats),
            "classes": stats.class_table(self.stats),
            "splits": self.stats,
            "cache_key": self.cache_key,
            "from_cache": self.from_cache,
        }

    def findings_json(self) -> dict[str, Any]:
        """Return the findings as the "/dataset_findings" API sends them (errors first)."""
        ordered = checks.sort_findings(self.findings)
        return {
            "counts": {severity: sum(1 for f in ordered if f.severity == severity) for severity in checks.SEVERITIES},
            "findings": [finding.to_json_dict() for finding in ordered],
            "cache_key": self.cache_key,
        }

    def to_json_bytes(self) -> bytes:
        data = asdict(self)
        data["findings"] = [finding.to_json_dict() for finding in self.findings]
        data["version"] = REPORT_VERSION
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> DatasetReport:
        data = orjson.loads(raw)
        data.pop("version", None)
        data["findings"] = [Finding.from_json_dict(f) for f in data["findings"]]
        return cls(**data)


def analyse_dataset(
    source: DatasetSource,
    *,
    settings: Settings,
    options: AnalysisOptions | None = None,
    progress: ProgressCallback | None = None,
    use_cache: bool = True,
) -> DatasetReport:
    """Compute (or read from the cache) the statistics, findings and sample index of every split."""
    options = options or AnalysisOptions()
    splits = {name: split for name, split in source.splits.items() if split.images or split.annotations}
    if not splits:
        raise DatasetError("no dataset path given; expected at least the train split's images or annotation file.")
    source = DatasetSource(splits=splits, format=source.resolved_format() if source.splits else "")
    report_format = source.format
    started = time.monotonic()

    _report(progress, 0.0, "Reading annotation files")
    inputs = {name: _SplitInput.read(name, split, report_format) for name, split in splits.items()}
    key = _cache_key(report_format, inputs, options, settings)
    cache_file = settings.cache_dir / "datasets" / f"{key}.json"
    if use_cache and cache_file.is_file():
        report = DatasetReport.from_json_bytes(cache_file.read_bytes())
        report.from_cache = True
        logger.info("Dataset report read from the cache in %.2f s: %s", time.monotonic() - started, cache_file)
        return report

    report = DatasetReport(format=report_format, source={"format": report_format,
                                                         "splits": {n: asdict(s) for n, s in splits.items()}},
                           stats={}, findings=[], samples=[], cache_key=key)
    hashes: dict[str, list[tuple[str, Any]]] = {}
    classes: dict[str, list[str]] = {}
    for position, (name, split_input) in enumerate(inputs.items()):
        share = _SubProgress(progress, position / len(inputs), (position + 1) / len(inputs), name)
        analysed = split_input.analyse(settings=settings, options=options, progress=share)
        report.stats[name] = analysed.stats
        report.findings.extend(analysed.findings)
        report.samples.extend(analysed.samples)
        hashes[name] = analysed.hashes
        classes[name] = [c["name"] for c in analysed.stats.get("classes", []) if c.get("annotations")]
        if split_input.table is not None:
            report.annotation_files[name] = {"path": str(split_input.table.annotation_file),
                                             "content_hash": split_input.table.content_hash,
                                             "image_dir": str(split_input.table.image_dir)}

    report.findings.extend(checks.check_split_leakage(hashes))
    if report_format in ("imagefolder", "coco", "coco_panoptic"):
        report.findings.extend(checks.check_split_classes(classes))
    report.findings = checks.sort_findings(report.findings)
    _attach_findings_to_samples(report)
    report.seconds = round(time.monotonic() - started, 3)

    write_atomic(cache_file, report.to_json_bytes())
    _report(progress, 1.0, "Done")
    logger.info("Analysed %s dataset (%s) in %.1f s: %d findings", report_format, ", ".join(inputs),
                report.seconds, len(report.findings))
    return report


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file beside `path`, then rename it over `path`, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class _SplitResult:
    stats: dict[str, Any]
    findings: list[Finding]
    samples: list[dict[str, Any]]
    hashes: list[tuple[str, Any]]


@dataclass
class _SplitInput:
    name: str
    source: SplitSource
    format: str
    table: CocoTable | None = None
    layout: FolderLayout | None = None
    signature: str = ""

    @classmethod
    def read(cls, name: str, source: SplitSource, dataset_format: str) -> _SplitInput:
        split = cls(name=name, source=source, format=dataset_format)
        if dataset_format in ("coco", "coco_panoptic"):
            if not source.annotations:
                raise DatasetError(f"split {name!r} has no annotation file; expected the path of a COCO JSON file.")
            image_dir = Path(source.images).expanduser() if source.images else None
            split.table = load_coco_table(Path(source.annotations).expanduser(), image_dir)
            split.signature = f"{split.table.content_hash}|{split.table.image_dir}|{_mtime(split.table.image_dir)}"
        elif dataset_format == "imagefolder":
            split.layout = scan_imagefolder(Path(source.images).expanduser())
            split.signature = _listing_signature([path for path, _ in split.layout.samples])
        else:
            masks = Path(source.annotations).expanduser() if source.annotations else None
            split.layout = scan_mask_folder(Path(source.images).expanduser(), masks)
            split.signature = _listing_signature([p for pair in split.layout.pairs for p in pair])
        return split

    def analyse(self, *, settings: Settings, options: AnalysisOptions, progress: ProgressCallback) -> _SplitResult:
        if self.table is not None:
            return _analyse_coco(self.name, self.table, settings=settings, options=options, progress=progress)
        if self.format == "imagefolder":
            return _analyse_imagefolder(self.name, self.layout, settings=settings, options=options, progress=progress)
        return _analyse_mask_folder(self.name, self.layout, settings=settings, options=options, progress=progress)


def _analyse_coco(name: str, table: CocoTable, *, settings: Settings, options: AnalysisOptions,
                  progress: ProgressCallback) -> _SplitResult:
    progress(0.0, f"{name}: statistics and annotation checks")
    split_stats = stats.coco_statistics(table)
    findings = checks.check_coco_table(table, split=name, imbalance_ratio=options.imbalance_ratio)

    scans = scan_images(table.image_paths(), decode=options.decode_images, max_pixels=settings.max_image_pixels,
                        progress=_SubProgress(progress, 0.05, 0.9, f"{name}: images"), description="Scanning images")
    keys = table.image_ids.tolist()
    findings += checks.check_image_scans(scans, split=name, keys=keys, names=table.file_names,
                                         expected_sizes=list(zip(table.widths.tolist(), table.heights.tolist())),
                                         max_pixels=settings.max_image_pixels)
    if table.kind == "panoptic":
        pngs = [scan_panoptic_png(table.panoptic_dir / png) if png else None for png in table.panoptic_files]
        findings += checks.check_panoptic_pngs(table, pngs, split=name)

    samples = _coco_samples(name, table, scans)
    return _SplitResult(split_stats, findings, samples, [(s.sha256, key) for s, key in zip(scans, keys)])


def _coco_samples(name: str, table: CocoTable, scans: Sequence[Any]) -> list[dict[str, Any]]:
    names = table.category_names()
    rows = table.image_index()
    known = rows >= 0
    per_image: list[set[str]] = [set() for _ in range(table.num_images)]
    for row, category_id in zip(rows[known].tolist(), table.category_ids[known].tolist()):
        per_image[row].add(names.get(category_id, str(category_id)))
    counts = np.bincount(rows[known], minlength=table.num_images).tolist()
    return [
        {"split": name, "key": int(image_id), "path": str(scan.path), "file_name": file_name,
         "classes": sorted(per_image[row]), "objects": counts[row], "findings": []}
        for row, (image_id, file_name, scan) in enumerate(zip(table.image_ids.tolist(), table.file_names, scans))
    ]


def _analyse_imagefolder(name: str, layout: FolderLayout, *, settings: Settings, options: AnalysisOptions,
                         progress: ProgressCallback) -> _SplitResult:
    paths = [path for path, _ in layout.samples]
    scans = scan_images(paths, decode=options.decode_images, max_pixels=settings.max_image_pixels,
                        progress=_SubProgress(progress, 0.0, 0.95, f"{name}: images"), description="Scanning images")
    keys = [path.relative_to(layout.root).as_posix() for path in paths]
    split_stats = stats.imagefolder_statistics(layout, scans)

    findings = checks.check_imagefolder_layout(layout, split=name)
    findings += checks.check_image_scans(scans, split=name, keys=keys, names=keys, max_pixels=settings.max_image_pixels)
    imbalance = checks.check_class_imbalance({c["name"]: c["images"] for c in split_stats["classes"]}, split=name,
                                             ratio=options.imbalance_ratio)
    findings += [imbalance] if imbalance else []

    samples = [{"split": name, "key": key, "path": str(path), "file_name": key, "classes": [layout.classes[label]],
                "objects": 1, "findings": []} for key, (path, label) in zip(keys, layout.samples)]
    return _SplitResult(split_stats, findings, samples, [(s.sha256, key) for s, key in zip(scans, keys)])


def _analyse_mask_folder(name: str, layout: FolderLayout, *, settings: Settings, options: AnalysisOptions,
                         progress: ProgressCallback) -> _SplitResult:
    image_paths = [image for image, _ in layout.pairs]
    scans = scan_images(image_paths, decode=options.decode_images, max_pixels=settings.max_image_pixels,
                        progress=_SubProgress(progress, 0.0, 0.6, f"{name}: images"), description="Scanning images")
    progress(0.6, f"{name}: reading masks")
    masks = [scan_mask(mask) for _, mask in layout.pairs]
    id2label = read_mask_labels(layout.root)
    keys = [image.name for image in image_paths]

    split_stats = stats.mask_statistics(layout, masks, scans, id2label, ignore_index=options.ignore_index)
    findings = checks.check_mask_layout(layout, split=name)
    findings += checks.check_image_scans(scans, split=name, keys=keys, names=keys, max_pixels=settings.max_image_pixels)
    findings += checks.check_mask_scans(masks, scans, split=name, keys=keys, num_labels=len(id2label) or None,
                                        ignore_index=options.ignore_index)

    samples = []
    for key, (image, mask), mask_scan in zip(keys, layout.pairs, masks):
        present = [id2label.get(v, f"value {v}") for v in mask_scan.values if v != options.ignore_index]
        samples.append({"split": name, "key": key, "path": str(image), "mask_path": str(mask), "file_name": key,
                        "classes": sorted(set(present)), "objects": len(present), "findings": []})
    return _SplitResult(split_stats, findings, samples, [(s.sha256, key) for s, key in zip(scans, keys)])


def read_mask_labels(root: Path) -> dict[int, str]:
    """Read a mask folder's class names: ``labels.txt`` (one name per line, index = line) or ``id2label.json``."""
    labels_txt = root / "labels.txt"
    if labels_txt.is_file():
        names = [line.strip() for line in labels_txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        return dict(enumerate(names))
    id2label_json = root / "id2label.json"
    if id2label_json.is_file():
        try:
            return {int(k): str(v) for k, v in orjson.loads(id2label_json.read_bytes()).items()}
        except (orjson.JSONDecodeError, ValueError, AttributeError) as error:
            raise DatasetError(f"{id2label_json} is not a JSON object of label id -> name ({error}); "
                               'expected {"0": "background", "1": "person"}.') from error
    return {}


def _attach_findings_to_samples(report: DatasetReport) -> None:
    index = {(sample["split"], sample["key"]): sample for sample in report.samples}
    for finding in report.findings:
        splits = SPLITS if finding.split == "all" else (finding.split,)
        for key in finding.image_keys:
            for split in splits:
                sample = index.get((split, key))
                if sample is not None and finding.code not in sample["findings"]:
                    sample["findings"].append(finding.code)


def _cache_key(dataset_format: str, inputs: Mapping[str, _SplitInput], options: AnalysisOptions,
               settings: Settings) -> str:
    parts = [f"v{REPORT_VERSION}", dataset_format, str(settings.max_image_pixels), repr(asdict(options))]
    parts += [f"{name}={split_input.signature}" for name, split_input in inputs.items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _listing_signature(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _report(progress: ProgressCallback | None, fraction: float, description: str) -> None:
    if progress is not None:
        progress(fraction, description)


class _SubProgress:
    """Map a step's progress (0..1) into a share [start, end] of the whole analysis."""

    def __init__(self, parent: ProgressCallback | None, start: float, end: float, prefix: str) -> None:
        self.parent, self.start, self.end, self.prefix = parent, start, end, prefix

    def __call__(self, fraction: float, description: str) -> None:
        if self.parent is not None:
            self.parent(self.start + (self.end - self.start) * min(max(fraction, 0.0), 1.0), description)


def content_hash_of(path: str | Path) -> str:
    """Return the sha256 of a file's bytes (the key that COCO analysis results are cached under)."""
    return file_sha256(Path(path).read_bytes())
