"""The target device: a latency predictor for the chosen space, and whether it is this machine.

``--device local`` profiles this machine's CPU through ONNX Runtime for the chosen space on first use and
caches the table and the fitted predictor under a device fingerprint (CPU model, ONNX Runtime version,
threads, space and its options), so later runs start at once. ``--device PATH`` reads a latency table or a
saved predictor measured on the real device and checks that it fits the search: measured with ONNX
Runtime (or a runtime left unknown, as published tables are), and about this space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import pathlib
from typing import TYPE_CHECKING, Any, Callable, Mapping

from latency_models import (PROTOCOL_NAME, LatencyPredictor, LatencyTable, cpu_name, floor_note, kernels_from_onnx,
                            profile_models)
from search._cache import cache_dir
from search._errors import InputError
from search._objective import predict_latency
from search._profiling import CALIBRATION, KERNEL_LISTING, profile_spaces

if TYPE_CHECKING:
    import optuna
    import numpy as np

    from spaces import Candidate, SearchSpace

__all__ = ["DEFAULT_PROFILE_MIN", "TIGHT_BUDGET", "Device", "add_models", "fastest_candidate", "float_variant",
           "resolve_device", "seed_study", "start_count", "uniform_fast_ends", "uniform_starts"]

logger = logging.getLogger(__name__)

#: Minutes of profiling for ``--device local`` on first use (small enough for the 15-minute quick start).
DEFAULT_PROFILE_MIN = 3.0
#: Runtimes a table may name: ONNX Runtime (what the search exports for), or unknown (published numbers).
ACCEPTED_RUNTIMES = ("onnxruntime", "unknown", "")


@dataclasses.dataclass
class Device:
    """The target device as the search sees it.

    Attributes:
        predictor: predicts milliseconds for the space's candidates on the device.
        local: True when the device is this machine (exported models can be re-measured here).
        description: one line saying what the device is and where its numbers come from.
        source: the table or predictor file behind it.
        profiled_now: True when this call profiled the machine (not read from the cache).
        threads: ONNX Runtime intra-op threads of the measurements (local device).
        model_sources: the ``source`` of every whole model timed into the device's table (``teacher:<hash>``
            once the teacher was timed on it); empty for a saved predictor.
    """

    predictor: "LatencyPredictor"
    local: bool
    description: str
    source: pathlib.Path | None = None
    profiled_now: bool = False
    threads: int = 1
    model_sources: frozenset[str] = frozenset()


def fingerprint(space: "SearchSpace", *, threads: int) -> dict[str, Any]:
    """What identifies a local profile: CPU, runtime version, threads, space and options, timing protocol
    (a table measured under an older protocol is profiled again, not mixed) and the calibration models'
    design (:data:`search._profiling.CALIBRATION`) and how the spaces list kernels
    (:data:`search._profiling.KERNEL_LISTING`)."""
    import platform

    import onnxruntime

    options = {k: v for k, v in space.latency_options.items() if isinstance(v, (int, float, str, bool))}
    return {
        "cpu_model": cpu_name(),
        "platform": f"{platform.system()} {platform.machine()}",
        "runtime": "onnxruntime",
        "runtime_version": onnxruntime.__version__,
        "threads": int(threads),
        "protocol": PROTOCOL_NAME,
        "calibration": CALIBRATION,
        "kernel_listing": KERNEL_LISTING,
        "space": space.name,
        "options": options,
    }


def check_device_spec(spec: str) -> None:
    """Raise :class:`InputError` when ``spec`` is neither ``local`` nor an existing file."""
    if spec == "local":
        return
    path = pathlib.Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"--device {spec}: the file {path} does not exist (allowed: local, a latency table or a "
                         f"saved predictor JSON)")


def resolve_device(spec: str, space: "SearchSpace", *, threads: int = 1, profile_min: float = DEFAULT_PROFILE_MIN,
                   cache: pathlib.Path | None = None,
                   on_progress: Callable[[float, float, str], None] | None = None) -> Device:
    """The :class:`Device` named by ``spec`` (``"local"`` or a path) for ``space``.

    ``on_progress(seconds, budget_seconds, message)`` follows a first-use profile of this machine.

    Raises:
        InputError: a missing, corrupt or mismatched table or predictor.
    """
    check_device_spec(spec)
    if spec == "local":
        return _local(space, threads=threads, profile_min=profile_min, cache=cache or cache_dir(),
                      on_progress=on_progress)
    path = pathlib.Path(spec).expanduser()
    predictor, table = _read(path)
    check_match(predictor, table, space, where=f"--device {spec}")
    name = predictor.device.get("name", "?")
    desc = predictor.device.get("description") or ""
    return Device(predictor=predictor, local=False, source=path,
                  description=f"{name}{' (' + desc + ')' if desc else ''}, from {path.name}",
                  model_sources=_sources(table))


def _read(path: pathlib.Path) -> tuple["LatencyPredictor", "LatencyTable | None"]:
    """A predictor and the table it came from (None when the file is a saved predictor)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--device {path} is not a readable JSON latency table or predictor: {exc}") from None
    if isinstance(data, Mapping) and data.get("kind") == "karumi.LatencyPredictor":
        try:
            return LatencyPredictor.load(path), None
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--device {path} is a corrupt latency predictor: {exc}") from None
    try:
        table = LatencyTable.load(path)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--device {path} is not a valid latency table: {exc}") from None
    try:
        return LatencyPredictor.fit(table), table
    except ValueError as exc:  # numpy's LinAlgError is a ValueError too
        raise InputError(f"--device {path}: cannot fit a latency predictor to this table: {exc}") from None


def _probe(space: "SearchSpace", n: int = 16, seed: int = 0) -> list["Candidate"]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [space.candidate()] + [space.sample(rng) for _ in range(n - 1)]


def check_match(predictor: "LatencyPredictor", table: "LatencyTable | None", space: "SearchSpace", *,
                where: str) -> None:
    """Refuse a table or predictor measured with another runtime or describing another space."""
    runtime = str(predictor.device.get("runtime", "unknown")).lower()
    if runtime not in ACCEPTED_RUNTIMES:
        raise InputError(f"{where} was measured with runtime {runtime!r}; the search exports ONNX models for "
                         f"onnxruntime, so the table must be measured with it (or its runtime left unknown)")
    measured = predictor.protocol.get("spaces") or (table.protocol.get("spaces") if table is not None else None)
    if isinstance(measured, (list, tuple)) and measured and space.name not in measured:
        raise InputError(f"{where} was profiled for space(s) {', '.join(map(str, measured))}, not the chosen "
                         f"--space {space.name}")
    probes = _probe(space)
    if table is not None:
        spaces = {str(r.candidate.get("space")) for r in table.model_rows if r.candidate}
        if spaces and space.name not in spaces and not table.kernel_rows:
            raise InputError(f"{where} describes models of space {', '.join(sorted(spaces))}, not the chosen "
                             f"--space {space.name}")
        if table.kernel_rows:
            have = {(r.kernel.op, r.kernel.bits) for r in table.kernel_rows}
            need = {(k.op, k.bits) for c in probes for k in space.kernels(c) if k.op in ("conv", "linear")}
            missing = sorted(need - have)
            if missing and not table.model_rows:
                shown = ", ".join(f"{op}@{bits}bit" for op, bits in missing[:4])
                raise InputError(f"{where} has no kernels like the {space.name} space's ({shown}); profile this "
                                 f"space with python -m latency_models profile --space {space.name}")
    if predictor.mode == "models" and predictor.gene_ms:
        ours = {str(name) for c in probes for name in c.genes}
        theirs = {g.split("=")[0].split("[")[0] for g in predictor.gene_ms}
        if theirs and not ours & theirs:
            raise InputError(f"{where} was fitted on candidates with genes {', '.join(sorted(theirs))}, not those "
                             f"of the chosen --space {space.name} ({', '.join(sorted(ours)) or 'none'})")
    preds = predict_latency(predictor, space, probes)
    bad = [float(p) for p in preds if not (math.isfinite(float(p)) and float(p) > 0)]
    if bad:
        raise InputError(f"{where} predicts {bad[0]!r} ms for {space.name} candidates: it does not describe this "
                         f"space on this runtime")


def _local(space: "SearchSpace", *, threads: int, profile_min: float, cache: pathlib.Path,
           on_progress: Callable[[float, float, str], None] | None) -> Device:
    fp = fingerprint(space, threads=threads)
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / "devices" / f"{space.name}-{digest}"
    table_path, pred_path = folder / "table.json", folder / "predictor.json"
    desc = f"this machine ({fp['cpu_model']}, onnxruntime {fp['runtime_version']}, {threads} thread(s))"
    if pred_path.is_file():
        try:
            predictor = LatencyPredictor.load(pred_path)
            table = LatencyTable.load(table_path) if table_path.is_file() else None
            if table is not None and not predictor.int8_pool_state:  # saved before 8-bit pools had a state
                logger.info("fitting the cached predictor %s again from its table (saved by an older karumi)", pred_path)
                predictor = LatencyPredictor.fit(table)
                predictor.save(pred_path)  # atomic: a temporary file, then a rename
            sources = _sources(table)
            return Device(predictor=predictor, local=True, description=desc, source=pred_path, threads=threads,
                          model_sources=sources)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            logger.warning("cached predictor %s is unreadable (%s); fitting it again", pred_path, exc)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fingerprint.json").write_text(json.dumps(fp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("profiling this machine for the %s space (%.1f min budget) into %s", space.name, profile_min, table_path)
    table = profile_spaces([space], device_name="local", out=table_path, threads=threads, budget_min=profile_min,
                           on_progress=on_progress)
    if not table.kernel_rows and not table.model_rows:  # run again to continue it with a larger budget
        raise InputError(f"--profile-min {profile_min:g}: the profile of this machine for the {space.name} space "
                         f"measured nothing in that time (a busy machine?); give it more minutes")
    warning = table.state_warning()
    if warning:
        logger.warning("%s (the cached profile is %s: delete that folder to profile again)", warning, folder)
    if table.extra.get("noise_floor"):
        logger.info("%s", floor_note(table.extra["noise_floor"]))
    predictor = LatencyPredictor.fit(table)
    predictor.save(pred_path)  # atomic: a temporary file, then a rename
    return Device(predictor=predictor, local=True, description=desc, source=pred_path, profiled_now=True,
                  threads=threads, model_sources=_sources(table))


def model_name(model: Any, prefix: str) -> str:
    """``prefix:<hash of the model's kernels>`` of an ONNX path or ``ModelProto``: the same architecture gets
    the same name (weights do not count)."""
    kernels, _ = kernels_from_onnx(model)
    text = json.dumps([k.to_dict() for k in kernels], sort_keys=True)
    return f"{prefix}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def add_models(device: Device, models: list[Any], *, names: list[str],
               on_progress: Callable[[float, float, str], None] | None = None) -> Device:
    """The local device with ``models`` (outside the space, such as the teacher) timed into its cached table.

    The space's profile only holds the space's kernels, so a teacher made of other layers would be predicted
    by extrapolation (the built-in teacher at 0.07 ms against 0.34 ms measured). Its missing kernels and the
    whole model are timed once, the predictor is fitted again and cached; later runs find them in the
    table and pay nothing. Not local, or a model with operators that map to no kernel: the device unchanged.
    """
    if not device.local or device.source is None:
        return device
    table_path = device.source.with_name("table.json")
    if not table_path.is_file():
        return device
    before = len(LatencyTable.load(table_path).model_rows)
    try:
        table = profile_models(models, out=table_path, names=names, on_progress=on_progress)
    except ValueError as exc:
        logger.warning("%s not added to the latency profile: %s", ", ".join(names), exc)
        return device
    if len(table.model_rows) == before:
        return dataclasses.replace(device, model_sources=_sources(table))
    predictor = LatencyPredictor.fit(table)
    predictor.save(device.source)  # atomic
    return dataclasses.replace(device, predictor=predictor, model_sources=_sources(table))


def _sources(table: "LatencyTable | None") -> frozenset[str]:
    return frozenset(r.source for r in table.model_rows if r.source) if table is not None else frozenset()


# ----------------------------------------------------------------------------------- the fastest candidate
class _ChoiceTrial:
    """A stand-in for an Optuna trial: fixed values where given, else drawn at random; records each
    parameter's choices so a coordinate search can walk them."""

    def __init__(self, fixed: Mapping[str, Any], rng: "np.random.Generator") -> None:
        self.fixed = dict(fixed)
        self.rng = rng
        self.params: dict[str, Any] = {}
        self.choices: dict[str, list[Any]] = {}
        self.number = 0

    def _pick(self, name: str, choices: list[Any]) -> Any:
        self.choices[name] = choices
        value = self.fixed[name] if name in self.fixed and self.fixed[name] in choices else \
            choices[int(self.rng.integers(len(choices)))]
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._pick(name, list(choices))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        values = list(range(int(low), int(high) + 1, int(step)))
        ends = [values[0], values[-1]] if len(values) > 2 else values
        if name in self.fixed and self.fixed[name] in values:
            ends = sorted(set(ends) | {self.fixed[name]})
        return int(self._pick(name, ends))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        ends = [float(low), float(high)]
        if name in self.fixed and low <= self.fixed[name] <= high:
            ends = sorted(set(ends) | {float(self.fixed[name])})
        return float(self._pick(name, ends))

    def set_user_attr(self, key: str, value: Any) -> None:
        pass


def _sample_kwargs(search: tuple[str, ...] | None, bits: tuple[int, ...] | None,
                   genes: tuple[str, ...]) -> dict[str, Any]:
    """``space.sample`` keyword arguments for the given parts, bits and genes (those given only)."""
    kwargs: dict[str, Any] = {} if search is None else {"search": search}
    if bits is not None:
        kwargs["bits"] = bits
    if genes:
        kwargs["genes"] = tuple(genes)
    return kwargs


def fastest_candidate(space: "SearchSpace", predict: Callable[[list["Candidate"]], "np.ndarray"], *,
                      search: tuple[str, ...] | None = None, bits: tuple[int, ...] | None = None,
                      genes: tuple[str, ...] = (), seed: int = 0, starts: int = 32,
                      passes: int = 3) -> tuple["Candidate", float, dict[str, Any]]:
    """About the fastest candidate ``space`` can produce, by coordinate descent over its sampled parameters.

    Starts from the fastest of ``starts`` random candidates and tries every choice of one parameter at a
    time (the ends of numeric ranges), keeping what lowers the predicted latency. Returns the candidate,
    its predicted milliseconds and the Optuna parameters that produce it (for ``enqueue_trial``).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    kwargs = _sample_kwargs(search, bits, genes)

    def draw(fixed: Mapping[str, Any]) -> tuple["Candidate", _ChoiceTrial]:
        trial = _ChoiceTrial(fixed, rng)
        return space.sample(trial, **kwargs), trial

    first = [draw({}) for _ in range(starts)]
    lats = predict([c for c, _ in first])
    i = int(np.argmin(lats))
    best_c, best_t = first[i]
    best_lat, best_params = float(lats[i]), dict(best_t.params)
    for _ in range(passes):
        improved = False
        for name in list(best_t.choices):
            options = [v for v in best_t.choices.get(name, []) if v != best_params.get(name)]
            if not options:
                continue
            tries = [draw({**best_params, name: v}) for v in options]
            lats = predict([c for c, _ in tries])
            j = int(np.argmin(lats))
            if float(lats[j]) < best_lat * (1 - 1e-9):
                best_c, best_t = tries[j]
                best_lat, best_params = float(lats[j]), dict(best_t.params)
                improved = True
        if not improved:
            break
    return best_c, best_lat, best_params


def float_variant(space: "SearchSpace", params: Mapping[str, Any], *, search: tuple[str, ...] | None = None,
                  bits: tuple[int, ...] | None = None,
                  genes: tuple[str, ...] = ()) -> tuple["Candidate", dict[str, Any]] | None:
    """The candidate of ``params`` (from :func:`fastest_candidate`) with every searched bit width at 32, and its
    parameters; None when 32 bits is not allowed or every layer is at 32 already. On a CPU that does not
    reward low bits at the model's size, this is the faster of the two, whatever a predictor says."""
    import numpy as np

    if bits is not None and 32 not in bits:
        return None
    fixed = {name: (32 if name.startswith("bits_") else value) for name, value in params.items()}
    if fixed == dict(params):
        return None
    kwargs = _sample_kwargs(search, bits, genes)
    trial = _ChoiceTrial(fixed, np.random.default_rng(0))
    candidate = space.sample(trial, **kwargs)
    return candidate, dict(trial.params)


#: Budgets within this factor of the fastest candidate get that candidate as their first trial (as do
#: searches held to the teacher's latency).
TIGHT_BUDGET = 2.0


def seed_study(study: "optuna.Study", space: "SearchSpace", predict: Callable[[list["Candidate"]], "np.ndarray"], *,
               budget_ms: float, trials: int, fastest: tuple["Candidate", float, dict[str, Any]],
               held: bool = False, starts: bool = True, **sample_kwargs: Any) -> list[tuple["Candidate", float, dict[str, Any]]]:
    """Enqueue a new study's first trials: the space's ``fastest`` candidate (from :func:`fastest_candidate`)
    when the budget is within :data:`TIGHT_BUDGET` of it or ``held`` (a budget held to the teacher's
    latency), so the front has a trained point that can ship however few trials run; then, with ``starts``,
    the :func:`uniform_starts` (``start_count(trials)`` of them), never more trials than ``trials`` (one left
    waiting would outlive the run in the study). Returns the uniform starts enqueued."""
    _, fastest_ms, params = fastest
    if held or budget_ms < TIGHT_BUDGET * fastest_ms:
        study.enqueue_trial(params, skip_if_exists=True)
    if not starts:
        return []
    chosen = uniform_starts(space, predict, budget_ms=budget_ms, count=start_count(trials), **sample_kwargs)
    chosen = chosen[:max(0, int(trials) - len(study.trials))]
    for _, _, start_params in chosen:
        study.enqueue_trial(start_params, skip_if_exists=True)
    return chosen


def start_count(trials: int) -> int:
    """How many uniform starts a run of ``trials`` trials enqueues at most: half of them (at least one), so
    the sampler's own trials are never fewer than the hand-made sweep's."""
    return max(1, int(trials) // 2)


def uniform_starts(space: "SearchSpace", predict: Callable[[list["Candidate"]], "np.ndarray"], *, budget_ms: float,
                   search: tuple[str, ...] | None = None, bits: tuple[int, ...] | None = None,
                   genes: tuple[str, ...] = (), count: int = 4) -> list[tuple["Candidate", float, dict[str, Any]]]:
    """The hand-made compressions a search starts from, so that its front begins where they are: the space's
    default architecture (the ``prune`` space: the teacher) with every prunable layer pruned alike and every
    quantisable layer at the narrowest width of ``bits``, swept along the prune grid where it meets
    ``budget_ms``.

    Of the uniform ratios whose predicted latency meets the budget, ``count`` evenly spaced ones from the
    least pruned (the most accurate at the budget) to the most pruned (the fastest), so a search that runs
    them holds the uniform compression's trade-off curve without a trial spent over the budget: a hand-made
    sweep is hard to beat at equal trials, and the sampler's own trials have to do better than these points.
    They are listed in bisection order (the budget's end, the fast end, then the middles), so the first few
    already span the front. When the narrowest width is below 8 bits (where a uniform width may cost much
    accuracy), a float start at the budget comes second, within ``count``. Only 32 bits when ``"bits"`` is
    not searched; ratio 0 only when ``"prune"`` is not (one start at most). Returns (candidate, predicted ms,
    the Optuna parameters that draw it, for ``enqueue_trial``); a space that cannot give the parameters of
    its default architecture has none.
    """
    import numpy as np

    from spaces import PRUNE_RATIO_MAX, PRUNE_RATIO_STEP, SEARCH_BITS, SEARCH_PARTS

    search = tuple(SEARCH_PARTS if search is None else search)
    bits = tuple(SEARCH_BITS if bits is None else bits)
    narrow = min(bits) if "bits" in search else 32
    widths = [narrow, 32] if narrow < 8 else [narrow]
    ratios = [round(i * PRUNE_RATIO_STEP, 6) for i in range(int(round(PRUNE_RATIO_MAX / PRUNE_RATIO_STEP)) + 1)] \
        if "prune" in search else [0.0]
    grid = [[_uniform(space, r, b) for r in ratios] for b in widths]
    lats = np.asarray(predict([c for row in grid for c in row]), dtype=float).reshape(len(widths), len(ratios))
    fits = [np.flatnonzero(row <= budget_ms) for row in lats]
    chosen: list[tuple[int, int]] = []  # (width index, ratio index)
    if count > 0 and len(fits[0]):
        sweep = fits[0][np.unique(np.round(np.linspace(0, len(fits[0]) - 1, min(count, len(fits[0])))).astype(int))]
        order = _bisection_order(len(sweep))
        chosen = [(0, int(sweep[k])) for k in order]
    if len(widths) > 1 and len(fits[1]) and count > 1:  # the float hedge at the budget, second
        chosen = chosen[:1] + [(1, int(fits[1][0]))] + chosen[1:count - 1]
    starts: list[tuple["Candidate", float, dict[str, Any]]] = []
    for w, i in chosen:
        try:
            params = space.trial_params(grid[w][i], search=search, bits=bits, genes=genes)
        except ValueError as exc:
            logger.info("no uniform start in the %s space: %s", space.name, exc)
            return []
        starts.append((grid[w][i], float(lats[w, i]), params))
    return starts


def _uniform(space: "SearchSpace", ratio: float, width: int) -> "Candidate":
    """The space's default architecture with every prunable layer pruned by ``ratio`` and every quantisable
    layer at ``width`` bits."""
    default = space.candidate()
    layers = space.layers(default)
    return space.candidate(**dict(default.genes), prune_ratios=[ratio if layer.prunable else 0.0 for layer in layers],
                           bits=[width if layer.quantisable else 32 for layer in layers])


def uniform_fast_ends(space: "SearchSpace", *, search: tuple[str, ...] | None = None,
                      bits: tuple[int, ...] | None = None,
                      genes: tuple[str, ...] = ()) -> list[tuple["Candidate", dict[str, Any]]]:
    """The fast ends of the uniform compressions (:func:`uniform_starts`): the default architecture pruned
    by the largest ratio, at each searched width, and their Optuna parameters. A second opinion on the
    space's fastest model that depends on no predictor (:func:`fastest_candidate` follows one, which a short
    profile can lead to widths or shapes the device does not reward); none when the space cannot give the
    parameters of its default architecture."""
    from spaces import PRUNE_RATIO_MAX, SEARCH_BITS, SEARCH_PARTS

    search = tuple(SEARCH_PARTS if search is None else search)
    bits = tuple(SEARCH_BITS if bits is None else bits)
    widths = sorted(set(bits)) if "bits" in search else [32]
    ratio = PRUNE_RATIO_MAX if "prune" in search else 0.0
    ends = []
    for width in widths:
        candidate = _uniform(space, ratio, width)
        try:
            ends.append((candidate, space.trial_params(candidate, search=search, bits=bits, genes=genes)))
        except ValueError as exc:
            logger.info("no uniform candidate in the %s space: %s", space.name, exc)
            return []
    return ends


def _bisection_order(n: int) -> list[int]:
    """0, n-1, then the midpoints of the gaps left, widest first: any prefix spreads over 0..n-1."""
    if n <= 2:
        return list(range(n))
    order, gaps = [0, n - 1], [(0, n - 1)]
    while gaps:
        gaps.sort(key=lambda g: g[0] - g[1])  # widest first
        lo, hi = gaps.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        gaps += [(lo, mid), (mid, hi)]
    return order
