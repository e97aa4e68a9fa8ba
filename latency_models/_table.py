"""`LatencyTable`: what was measured on one device, under which protocol, as JSON.

Two kinds of rows:

- kernel rows: one :class:`~latency_models.Kernel` timed alone in a small ONNX graph, and its latency;
- model rows: the kernels of a whole model (a candidate or an ONNX file), its end-to-end latency, and
  optionally the candidate as a JSON dict and a free-text source.

No torch here: this module runs on the edge device.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gzip
import json
import logging
import math
import os
import pathlib
import platform
import statistics
from typing import Any, Iterable, Mapping, Sequence

from latency_models._kernel import Kernel

__all__ = ["LatencyTable", "KernelRow", "ModelRow", "FORMAT_VERSION", "REFERENCE_SPREAD_WARN", "cpu_name",
           "default_protocol", "device_info", "read_json", "timing_params"]

logger = logging.getLogger(__name__)

#: Version of the table's JSON layout; a file with another version is refused.
FORMAT_VERSION = 1
#: A profile whose rows' references spread more than this (90th over 10th percentile) was taken while the
#: machine's state changed for long stretches: :meth:`LatencyTable.state_warning` says so. On this VM's ten
#: committed 128-, 96- and 32-px tables, those at 1.007-1.012 predicted held-out random-width models within ±10 %
#: for 81.7-83.3 %, those at 1.061-1.146 for 51-78 % (``experiments/results/channel_alignment.md``).
REFERENCE_SPREAD_WARN = 1.05
#: Fewest rows with a reference for the spread to be judged.
_MIN_SPREAD_ROWS = 20


def default_protocol(**timing: Any) -> dict[str, Any]:
    """The measurement protocol every profile and re-measurement uses (``karumi-interleaved/3``), as a table
    records it: its name, the reference workload's name and the timing parameters (``timing`` overrides
    them; see :func:`latency_models._protocol.protocol_params`). ``threads`` is recorded in the device."""
    from latency_models._protocol import PROTOCOL_NAME, REFERENCE_NAME, protocol_params

    params = protocol_params(timing)
    params.pop("threads")
    return {
        "name": PROTOCOL_NAME,
        "reference": REFERENCE_NAME,
        "batch": 1,
        "execution_mode": "sequential",
        "graph_optimization": "ORT_ENABLE_ALL",
        "clock": "wall",
        "statistic": f"quantile {params['quantile']:g} of interleaved warm runs",
        **params,
    }


#: Timing parameters the protocol gained after tables were written, each with the value a table that lacks it was
#: timed under: such a table is continued with that value, so its new rows are timed as its old ones were.
#: (``memory_settle_mb`` does nothing without ``memory_settle_tolerance``; the value is the default's.)
ADDED_PARAMS: dict[str, Any] = {"memory_probe_mb": 0, "memory_settle_tolerance": None, "memory_settle_mb": 8,
                                "kernel_settle_attempts": None}


def continues(table_protocol: Mapping[str, Any], protocol: Mapping[str, Any]) -> bool:
    """Whether a table recorded under ``table_protocol`` may be continued by a run of ``protocol``: the same
    protocol, up to the :data:`ADDED_PARAMS` the table predates."""
    return dict(table_protocol) == {k: v for k, v in protocol.items() if k in table_protocol or k not in ADDED_PARAMS}


def timing_params(protocol: Mapping[str, Any]) -> dict[str, Any]:
    """The timing parameters recorded in a table's ``protocol`` (to measure more rows the same way).

    Raises:
        ValueError: the table was measured under another protocol (its rows cannot be continued).
    """
    from latency_models._protocol import PROTOCOL_NAME
    from latency_models._worker import DEFAULTS

    if protocol.get("name") != PROTOCOL_NAME:
        raise ValueError(f"the table was measured under protocol {protocol.get('name', 'karumi/1 (unnamed)')!r}, "
                         f"not {PROTOCOL_NAME!r}: profile the device again (its rows are not comparable)")
    return {**ADDED_PARAMS, **{k: protocol[k] for k in DEFAULTS if k in protocol and k != "threads"}}


def cpu_name() -> str:
    """The CPU's model name as the OS reports it (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_info(*, name: str, description: str = "", threads: int = 1, runtime: str = "onnxruntime",
                runtime_version: str | None = None, execution_provider: str = "CPUExecutionProvider",
                cpu_model: str | None = None, nchwc: Any = "detect") -> dict[str, Any]:
    """Device metadata for a table measured on *this* machine (runtime version and CPU detected).

    ``nchwc``: ONNX Runtime's channel-blocked layout as ``[block, channel alignment]``, or None; ``"detect"``
    (default) asks the installed ONNX Runtime when the table is for its CPU provider (see
    :mod:`latency_models._layout`; the predictor's layout terms need it).
    """
    if runtime_version is None:
        try:
            import onnxruntime

            runtime_version = onnxruntime.__version__
        except ImportError:  # a table built from published numbers needs no runtime
            runtime_version = "unknown"
    if nchwc == "detect":
        nchwc = None
        if runtime == "onnxruntime" and execution_provider == "CPUExecutionProvider":
            from latency_models._layout import nchwc_layout

            nchwc = nchwc_layout()
    return {
        "name": str(name),
        "description": str(description),
        "runtime": runtime,
        "runtime_version": str(runtime_version),
        "execution_provider": execution_provider,
        "threads": int(threads),
        "cpu_model": cpu_model if cpu_model is not None else cpu_name(),
        "platform": f"{platform.system()} {platform.machine()}",
        "nchwc": list(nchwc) if nchwc else None,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def read_json(path: str | os.PathLike[str], *, what: str) -> Any:
    """Parsed JSON of ``path``, plain or gzipped (a large table is often kept as ``table.json.gz``); an unreadable,
    malformed or truncated file, or one that is not JSON text, raises ``ValueError`` naming ``what``."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} path={str(path)!r} cannot be read: {exc.strerror}") from None
    if data[:2] == b"\x1f\x8b":  # gzip's magic number
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{what} {str(path)!r} is a truncated or corrupt gzip file: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is not JSON text; allowed: a UTF-8 JSON file, plain or gzipped") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {str(path)!r} is malformed or truncated JSON: {exc}") from None


def _check_latency(value: Any, where: str) -> float:
    if value is None:
        raise ValueError(f"{where}: field 'latency_ms' is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: field 'latency_ms'={value!r} must be a number of milliseconds")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: field 'latency_ms'={value!r} must be a positive finite number of milliseconds")
    return value


def _reference(row: Mapping[str, Any], where: str, field: str = "reference_ms") -> float | None:
    value = row.get(field)
    if value is None:
        return None
    try:
        return _check_latency(value, where)
    except ValueError as exc:
        raise ValueError(str(exc).replace("'latency_ms'", repr(field))) from None


@dataclasses.dataclass(frozen=True)
class KernelRow:
    """One kernel timed alone (``latency_ms`` includes the per-graph overhead of a one-kernel session)."""

    kernel: Kernel
    latency_ms: float
    reference_ms: float | None = None  # the reference workload's latency in the same measurement
    memory_reference_ms: float | None = None  # the protocol's memory probe in the same measurement

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kernel": self.kernel.to_dict(), "latency_ms": self.latency_ms}
        if self.reference_ms is not None:
            d["reference_ms"] = self.reference_ms
        if self.memory_reference_ms is not None:
            d["memory_reference_ms"] = self.memory_reference_ms
        return d


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One whole model: its kernels in graph order and its end-to-end latency."""

    kernels: tuple[Kernel, ...]
    latency_ms: float
    candidate: Mapping[str, Any] | None = None
    source: str = ""
    reference_ms: float | None = None  # the reference workload's latency in the same measurement
    memory_reference_ms: float | None = None  # the protocol's memory probe in the same measurement

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kernels": [k.to_dict() for k in self.kernels], "latency_ms": self.latency_ms}
        if self.reference_ms is not None:
            d["reference_ms"] = self.reference_ms
        if self.memory_reference_ms is not None:
            d["memory_reference_ms"] = self.memory_reference_ms
        if self.candidate is not None:
            d["candidate"] = dict(self.candidate)
        if self.source:
            d["source"] = self.source
        return d


def _kernel_from(data: Any, where: str) -> Kernel:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: must be a JSON object describing a Kernel, got {type(data).__name__}")
    try:
        return Kernel.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None


class LatencyTable:
    """Latencies measured on one device under one protocol.

    Args:
        device: metadata (``name``, ``description``, ``runtime``, ``runtime_version``,
            ``execution_provider``, ``threads``, ``cpu_model``, ``created_utc``); see :func:`device_info`.
        protocol: how every latency was obtained; see :func:`default_protocol`.
        kernel_rows / model_rows: the measurements.
    """

    def __init__(self, *, device: Mapping[str, Any], protocol: Mapping[str, Any] | None = None,
                 kernel_rows: Iterable[KernelRow] = (), model_rows: Iterable[ModelRow] = (),
                 extra: Mapping[str, Any] | None = None) -> None:
        if not isinstance(device, Mapping) or not device.get("name"):
            raise ValueError(f"device={device!r} must be a mapping with a non-empty 'name'")
        self.device: dict[str, Any] = dict(device)
        self.protocol: dict[str, Any] = dict(protocol) if protocol is not None else default_protocol()
        self.kernel_rows: list[KernelRow] = list(kernel_rows)
        self.model_rows: list[ModelRow] = list(model_rows)
        #: free-form bookkeeping (e.g. the profiler's time spent), saved with the table
        self.extra: dict[str, Any] = dict(extra or {})

    # ----------------------------------------------------------------- building
    def add_kernel(self, kernel: Kernel, latency_ms: float, *, reference_ms: float | None = None,
                   memory_reference_ms: float | None = None) -> KernelRow:
        """Append a kernel row (latency checked); ``reference_ms``, ``memory_reference_ms``: the reference's and
        the memory probe's latencies beside it."""
        if not isinstance(kernel, Kernel):
            raise ValueError(f"kernel={kernel!r} must be a latency_models.Kernel")
        where = f"kernel row {len(self.kernel_rows)}"
        ref = None if reference_ms is None else _check_latency(reference_ms, where + " reference")
        mem = None if memory_reference_ms is None else _check_latency(memory_reference_ms, where + " memory reference")
        row = KernelRow(kernel, _check_latency(latency_ms, where), ref, mem)
        self.kernel_rows.append(row)
        return row

    def add_model(self, kernels: Sequence[Kernel], latency_ms: float, *, candidate: Mapping[str, Any] | None = None,
                  source: str = "", reference_ms: float | None = None,
                  memory_reference_ms: float | None = None) -> ModelRow:
        """Append a model row (latency and kernels checked); ``reference_ms``, ``memory_reference_ms``: the
        reference's and the memory probe's latencies beside it."""
        where = f"model row {len(self.model_rows)}"
        kernels = tuple(kernels)
        if not kernels or not all(isinstance(k, Kernel) for k in kernels):
            raise ValueError(f"{where}: field 'kernels' must be a non-empty list of latency_models.Kernel")
        ref = None if reference_ms is None else _check_latency(reference_ms, where + " reference")
        mem = None if memory_reference_ms is None else _check_latency(memory_reference_ms, where + " memory reference")
        row = ModelRow(kernels, _check_latency(latency_ms, where), candidate, source, ref, mem)
        self.model_rows.append(row)
        return row

    @classmethod
    def from_measurements(cls, *, device: str | Mapping[str, Any], kernels: Sequence[Sequence[Kernel]],
                          latencies_ms: Sequence[float], candidates: Sequence[Mapping[str, Any] | None] | None = None,
                          description: str = "", protocol: Mapping[str, Any] | None = None,
                          source: str = "") -> "LatencyTable":
        """A table of model rows from end-to-end latencies measured elsewhere (e.g. a published benchmark).

        Args:
            device: the device name, or a full metadata mapping.
            kernels: each model's kernels (``space.kernels(candidate)``).
            latencies_ms: one end-to-end latency per model, in milliseconds.
            candidates: optionally each model's candidate as a JSON dict (``candidate.to_dict()``): its genes
                let a predictor learn per-gene-value corrections.
            protocol: how the numbers were measured, if known (recorded as given).
        """
        if len(kernels) != len(latencies_ms):
            raise ValueError(f"kernels ({len(kernels)}) and latencies_ms ({len(latencies_ms)}) must have the same length")
        if candidates is not None and len(candidates) != len(kernels):
            raise ValueError(f"candidates ({len(candidates)}) must have one entry per model ({len(kernels)})")
        if isinstance(device, str):
            meta = {"name": device, "description": description or "latencies measured elsewhere",
                    "runtime": "unknown", "runtime_version": "unknown", "execution_provider": "unknown",
                    "threads": 0, "cpu_model": "unknown",
                    "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
        else:
            meta = dict(device)
        proto = dict(protocol) if protocol is not None else {"statistic": "as published", "source": source or "external"}
        table = cls(device=meta, protocol=proto)
        for i, (ks, ms) in enumerate(zip(kernels, latencies_ms)):
            cand = None if candidates is None else candidates[i]
            if cand is not None and not isinstance(cand, Mapping):
                raise ValueError(f"candidates[{i}]={cand!r} must be a JSON dict (candidate.to_dict()) or None")
            table.add_model(ks, ms, candidate=cand, source=source)
        return table

    # ----------------------------------------------------------------- combining
    @staticmethod
    def merge(*tables: "LatencyTable") -> "LatencyTable":
        """One table with the rows of all ``tables``, which must share device name and protocol.

        A kernel measured in several tables keeps the median of its latencies.
        """
        if not tables:
            raise ValueError("merge needs at least one table")
        first = tables[0]
        for i, t in enumerate(tables[1:], 1):
            if not isinstance(t, LatencyTable):
                raise ValueError(f"tables[{i}] is a {type(t).__name__}, not a LatencyTable")
            if t.device.get("name") != first.device.get("name"):
                raise ValueError(
                    f"tables[{i}] device name {t.device.get('name')!r} differs from {first.device.get('name')!r}: "
                    "only tables of the same device can be merged"
                )
            if t.protocol != first.protocol:
                raise ValueError(f"tables[{i}] protocol {t.protocol} differs from {first.protocol}")
        by_kernel: dict[Kernel, list[float]] = {}
        for t in tables:
            for r in t.kernel_rows:
                by_kernel.setdefault(r.kernel, []).append(r.latency_ms)
        kernel_rows = [KernelRow(k, float(statistics.median(v))) for k, v in by_kernel.items()]
        model_rows = [r for t in tables for r in t.model_rows]
        return LatencyTable(device=first.device, protocol=first.protocol, kernel_rows=kernel_rows, model_rows=model_rows)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "device": self.device,
            "protocol": self.protocol,
            "kernel_rows": [r.to_dict() for r in self.kernel_rows],
            "model_rows": [r.to_dict() for r in self.model_rows],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "LatencyTable":
        """Parse and validate; errors name the row index and the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a latency table must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"latency table field 'format_version'={version!r} is not supported; allowed: {FORMAT_VERSION}")
        for field in ("device", "protocol"):
            if not isinstance(data.get(field), Mapping):
                raise ValueError(f"latency table field {field!r} is missing or not an object")
        if not data["device"].get("name"):
            raise ValueError("latency table field 'device.name' is missing or empty")
        extra = data.get("extra", {})
        if not isinstance(extra, Mapping):
            raise ValueError("latency table field 'extra' must be an object")
        table = cls(device=data["device"], protocol=data["protocol"], extra=extra)
        krows = data.get("kernel_rows", [])
        mrows = data.get("model_rows", [])
        for field, rows in (("kernel_rows", krows), ("model_rows", mrows)):
            if not isinstance(rows, list):
                raise ValueError(f"latency table field {field!r} must be a list, got {type(rows).__name__}")
        for i, row in enumerate(krows):
            where = f"kernel row {i}"
            if not isinstance(row, Mapping):
                raise ValueError(f"{where}: must be a JSON object")
            if "kernel" not in row:
                raise ValueError(f"{where}: field 'kernel' is missing")
            table.kernel_rows.append(KernelRow(_kernel_from(row["kernel"], f"{where}: field 'kernel'"),
                                               _check_latency(row.get("latency_ms"), where), _reference(row, where),
                                               _reference(row, where, "memory_reference_ms")))
        for i, row in enumerate(mrows):
            where = f"model row {i}"
            if not isinstance(row, Mapping):
                raise ValueError(f"{where}: must be a JSON object")
            kernels = row.get("kernels")
            if not isinstance(kernels, list) or not kernels:
                raise ValueError(f"{where}: field 'kernels' is missing or empty")
            ks = tuple(_kernel_from(k, f"{where}: field 'kernels[{j}]'") for j, k in enumerate(kernels))
            cand = row.get("candidate")
            if cand is not None and not isinstance(cand, Mapping):
                raise ValueError(f"{where}: field 'candidate' must be a JSON object or absent")
            table.model_rows.append(ModelRow(ks, _check_latency(row.get("latency_ms"), where), cand,
                                             str(row.get("source", "")), _reference(row, where),
                                             _reference(row, where, "memory_reference_ms")))
        return table

    def validate(self) -> "LatencyTable":
        """Re-check every row (after in-place edits); returns ``self``. Raises ``ValueError`` naming row and field."""
        LatencyTable.from_dict(json.loads(json.dumps(self.to_dict())))
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically (a temporary file renamed over ``path``), so an interruption never truncates it."""
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "LatencyTable":
        """Read and validate a table file; a malformed or truncated file raises ``ValueError``."""
        return cls.from_dict(read_json(path, what="latency table"))

    # ----------------------------------------------------------------- one scale
    @property
    def reference_ms(self) -> float | None:
        """The table's reference latency: the median of its rows' ``reference_ms`` (None if no row has one)."""
        refs = [r.reference_ms for r in (*self.kernel_rows, *self.model_rows) if r.reference_ms is not None]
        return float(statistics.median(refs)) if refs else None

    def reference_spread(self) -> float | None:
        """How much the machine's state moved while the table's rows were timed: the 90th percentile of the
        rows' ``reference_ms`` over the 10th (1.0: one state throughout), for the kernel rows and for the model
        rows (each with at least 20 references), whichever moved more; None when neither has 20."""
        spreads = []
        for rows in (self.kernel_rows, self.model_rows):
            refs = sorted(r.reference_ms for r in rows if r.reference_ms is not None)
            if len(refs) >= _MIN_SPREAD_ROWS:
                q = statistics.quantiles(refs, n=10, method="inclusive")
                spreads.append(q[-1] / q[0])
        return float(max(spreads)) if spreads else None

    def state_warning(self) -> str | None:
        """One line when the rows were timed in states that differ by more than :data:`REFERENCE_SPREAD_WARN`
        (a slow stretch longer than the protocol's settling attempts reached the table), else None."""
        spread = self.reference_spread()
        if spread is None or spread <= REFERENCE_SPREAD_WARN:
            return None
        return (f"the machine's speed changed while profiling: the rows' reference timings spread "
                f"{100 * (spread - 1):.1f} % (90th over 10th percentile; at most "
                f"{100 * (REFERENCE_SPREAD_WARN - 1):.0f} % in the tables that predicted best here); rows timed in a "
                "slow stretch predict worse: profile again (a new --out) when the machine is quieter")

    def on_reference_scale(self, reference_ms: float | None = None, *, exponent: float = 1.0) -> "LatencyTable":
        """A copy whose latencies are put on one scale, ``latency_ms * (reference_ms / row.reference_ms) **
        exponent`` (default :attr:`reference_ms`), so rows measured while the machine ran faster or slower
        compare. ``exponent``: how strongly the rows' latencies follow the reference's (1: in proportion; a
        predictor chooses its own, see ``LatencyPredictor.fit``). Rows without a reference are kept as
        measured; ``extra["reference_scaled_to_ms"]`` and ``extra["reference_exponent"]`` record the scale."""
        ref = self.reference_ms if reference_ms is None else _check_latency(reference_ms, "reference_ms")
        if not isinstance(exponent, (int, float)) or isinstance(exponent, bool) or not math.isfinite(exponent):
            raise ValueError(f"exponent={exponent!r} must be a finite number")
        if ref is None:
            return LatencyTable(device=self.device, protocol=self.protocol, kernel_rows=self.kernel_rows,
                                model_rows=self.model_rows, extra=self.extra)

        def scale(row: Any) -> float:
            if row.reference_ms is None:
                return row.latency_ms
            return row.latency_ms * (ref / row.reference_ms) ** exponent

        krows = [dataclasses.replace(r, latency_ms=scale(r), reference_ms=ref if r.reference_ms else None)
                 for r in self.kernel_rows]
        mrows = [dataclasses.replace(r, latency_ms=scale(r), reference_ms=ref if r.reference_ms else None)
                 for r in self.model_rows]
        return LatencyTable(device=self.device, protocol=self.protocol, kernel_rows=krows, model_rows=mrows,
                            extra={**self.extra, "reference_scaled_to_ms": ref, "reference_exponent": float(exponent)})

    # ----------------------------------------------------------------- convenience
    def __len__(self) -> int:
        return len(self.kernel_rows) + len(self.model_rows)

    def __repr__(self) -> str:
        return (f"LatencyTable(device={self.device.get('name')!r}, kernel_rows={len(self.kernel_rows)}, "
                f"model_rows={len(self.model_rows)})")
