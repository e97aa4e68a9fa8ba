"""The job: search compressed models under a latency budget measured on a device.

``search.run(budget_ms=..., ...)`` (or ``python -m search``) runs everything; the pieces it is made of are
public too, so that experiments and other drivers measure exactly what the search does: the data sets,
the teacher, the device, the distillation proxy, the per-trial objective and the study driver.
"""

from __future__ import annotations

from search._data import DATASETS, DataSet, Split, load_data
from search._device import (TIGHT_BUDGET, Device, fastest_candidate, resolve_device, seed_study, start_count,
                            uniform_fast_ends, uniform_starts)
from search._distill import distill_train, hint_loss, kd_loss, recalibrate_batchnorm
from search._errors import InputError
from search._objective import OBJECTIVES, SIZES, SearchContext, TrialResult, evaluate_candidate, predict_latency, rewarded_bits
from search._options import SearchOptions, command_line
from search._pareto import SELECTIONS, ParetoEntry, ParetoFront, accuracy_margin, pareto_front, select
from search._profiling import kernel_pool, measure_spaces, profile_spaces, space_models, write_space_workload
from search._proxy import ProxyEvaluator, SupernetProxy
from search._report import SearchResult
from search._run import run
from search._study import make_sampler, run_study
from search._supernet import SupernetResult, load_supernet, train_supernet
from search._teacher import Teacher, load_teacher
from search._train import accuracy, top1_accuracy

__all__: list[str] = [
    "DATASETS",
    "OBJECTIVES",
    "SELECTIONS",
    "SIZES",
    "TIGHT_BUDGET",
    "DataSet",
    "Device",
    "InputError",
    "ParetoEntry",
    "ParetoFront",
    "ProxyEvaluator",
    "SearchContext",
    "SearchOptions",
    "SearchResult",
    "SupernetProxy",
    "SupernetResult",
    "Split",
    "Teacher",
    "TrialResult",
    "accuracy",
    "accuracy_margin",
    "command_line",
    "distill_train",
    "evaluate_candidate",
    "fastest_candidate",
    "hint_loss",
    "kd_loss",
    "kernel_pool",
    "load_data",
    "load_supernet",
    "load_teacher",
    "make_sampler",
    "measure_spaces",
    "pareto_front",
    "predict_latency",
    "profile_spaces",
    "recalibrate_batchnorm",
    "resolve_device",
    "rewarded_bits",
    "run",
    "run_study",
    "select",
    "space_models",
    "top1_accuracy",
    "seed_study",
    "start_count",
    "uniform_fast_ends",
    "uniform_starts",
    "write_space_workload",
    "train_supernet",
]
