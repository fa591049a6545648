"""Whole-scan 2.5D nodule segmentation: train on patches, segment whole scans, choose, test.

The recipe behind ``benchmarks/bench_synthetic_segmentation.py`` and notebook 06, step by step:

1. :func:`cohort_split` -- patients split by patient (15 % validation, 20 % test, stratified by
   the cancer label); :func:`load_cases` -- each patient's windowed scan, nodule labels, lung
   mask and the slice step of its 2.5D context (:func:`lunglib.inference.context_step_for`).
2. :func:`training_patches` -- axial ``patch`` x ``patch`` patches carrying ``context`` slices
   on each side as channels: positives on nodules, negatives half on random lung voxels and
   half on bright lung voxels away from the nodules (vessels).
3. :func:`train_whole_scan_segmenter` -- a 2D U-Net on those patches (round 1); then, with
   ``hard_round``, the model's false positives on the *training* scans
   (:func:`mine_false_positives`) are added and it is fine-tuned (round 2). ``augment`` shows
   every patch under a fresh one of the 8 in-plane orientations each epoch.
4. :func:`segment_scans` -- whole-scan inference restricted to the lungs, optionally averaged
   with the left-right mirror (TTA); several models give the mean of their maps.
5. :func:`evaluate_variants` -- every variant (round 1 or 2, with or without the mirror) gets
   its post-processing chosen on the validation patients, the best variant is chosen there
   (:func:`lunglib.evaluation.selection.choose_variant`), and the test patients are scored
   once (:mod:`lunglib.recipes.whole_scan_scoring`).

:func:`run_whole_scan_recipe` runs them all, for one model or a seed ensemble (``members``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lunglib.evaluation import Split, patient_split
from lunglib.evaluation.selection import VariantChoice, choose_variant
from lunglib.inference import context_step_for, predict_volume, slice_window
from lunglib.preprocess import segment_lungs, window
from lunglib.recipes.whole_scan_scoring import WholeScanScores, score_test, score_variants
from lunglib.training.sampling import false_positive_patches, sample_patches

THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9)
MIN_VOLUMES_MM3 = (0.0, 20.0, 50.0, 100.0, 200.0, 400.0)


@dataclass(frozen=True)
class WholeScanConfig:
    """Patches, network and training rounds of the recipe (defaults: notebook 06's).

    Attributes
    ----------
    patch : int
        In-plane training patch size (a multiple of ``2 ** depth``).
    context : int
        Slices on each side given as channels (2.5D); 0 for a plain 2D U-Net.
    context_mm : float or None
        Distance between those slices in mm, whatever the slice thickness (None or 0:
        adjacent slices).
    n_pos, n_neg : int
        Positive and negative patches per training patient.
    hard_fraction : float
        Share of the negatives centred on bright lung voxels away from the nodules.
    depth, filters, dropout, batch_norm, learning_rate
        The U-Net (:func:`lunglib.models.build_unet`).
    batch_size, epochs : int
        Training batches and round-1 epochs.
    augment : bool
        Show every training patch and its mask under a random one of the 8 in-plane
        orientations, drawn afresh each epoch (:class:`lunglib.training.EpochAugmented`).
    hard_round : bool
        Mine the round-1 model's false positives on the training scans and fine-tune on all
        patches plus these (round 2).
    n_hard, hard_epochs : int
        False-positive patches per training patient, and the fine-tuning epochs.
    restore_best : bool
        At the end of each round, put back the weights of the epoch with the lowest validation
        loss (Keras' ``EarlyStopping(restore_best_weights=True)`` with a patience as long as the
        round, so every epoch still runs). Off by default, as the recorded benchmarks ran;
        notebook 06 turns it on: with a handful of validation patients the last epoch can be a
        bad one.
    """

    patch: int = 32
    context: int = 2
    context_mm: float | None = 2.5
    n_pos: int = 96
    n_neg: int = 32
    hard_fraction: float = 0.5
    depth: int = 2
    filters: int = 16
    dropout: float = 0.1
    batch_norm: bool = False
    learning_rate: float = 3e-3
    batch_size: int = 32
    epochs: int = 20
    augment: bool = False
    hard_round: bool = True
    n_hard: int = 32
    hard_epochs: int = 8
    restore_best: bool = False


@dataclass
class Case:
    """One patient, ready for training and inference (one voxel grid throughout).

    ``image`` is the scan windowed to [-1000, 400] HU and scaled to [0, 1]; ``nodules`` the
    nodule labels (k inside nodule k); ``lung`` the lung mask; ``spacing`` the voxel size
    (z, y, x) in mm; ``step`` the slice step of the 2.5D context; ``scan`` the loaded
    :class:`lunglib.io.CTScan` when kept (for viewers and export).
    """

    image: np.ndarray
    nodules: np.ndarray
    lung: np.ndarray
    spacing: Sequence[float]
    step: int
    scan: Any = None


@dataclass
class TrainedSegmenter:
    """The models of :func:`train_whole_scan_segmenter` and how their training went.

    ``round1`` is the model after the first round (an uncompiled copy when a second round
    followed), ``round2`` the fine-tuned one or None; ``history`` and ``hard_history`` are the
    per-epoch losses and metrics of the two rounds; ``hard_patches`` the number of mined
    false-positive patches and ``hard_patients`` the training patients they came from;
    ``seconds`` the time of each round (the second includes mining).
    """

    round1: Any
    round2: Any
    history: pd.DataFrame
    hard_history: pd.DataFrame | None = None
    hard_patches: int = 0
    hard_patients: int = 0
    seconds: dict[str, float] | None = None

    @property
    def final(self) -> Any:
        """The last round's model."""
        return self.round1 if self.round2 is None else self.round2

    def rounds(self) -> dict[str, Any]:
        """``{"round 1": model, "round 2": model}`` (round 2 only when it was trained)."""
        rounds = {"round 1": self.round1}
        if self.round2 is not None:
            rounds["round 2"] = self.round2
        return rounds


def cohort_split(
    dataset, n_patients: int = 0, seed: int = 42, saved: Split | None = None
) -> tuple[list[str], Split]:
    """The first ``n_patients`` patients of a dataset (0: all) and their patient split.

    With ``saved`` (a split drawn for the whole cohort, e.g. notebook 04's ``split.json``) the
    patients keep their parts (:meth:`lunglib.evaluation.Split.subset`), so no patient tested
    on here was trained on elsewhere -- provided it places every one of them and leaves at
    least one validation and one test patient among them. Otherwise, or without ``saved``, a
    new split: 15 % validation and 20 % test patients, stratified by the dataset's cancer
    labels (:func:`lunglib.evaluation.patient_split`; a patient without a label counts as 0).
    """
    ids = dataset.patient_ids()
    ids = ids[:n_patients] if n_patients else ids
    if saved is not None:
        try:
            kept = saved.subset(ids)
        except ValueError:  # some patients are not in the saved split (another cohort)
            kept = None
        if kept is not None and kept.val and kept.test:
            return ids, kept
    labels = dataset.labels()
    return ids, patient_split(ids, [labels.get(p, 0) for p in ids], val_fraction=0.15,
                              test_fraction=0.2, seed=seed)


def load_cases(
    dataset, ids: Iterable[str], context_mm: float | None = 2.5, keep_scans: bool = False,
    skipped: dict[str, str] | None = None,
) -> dict[str, Case]:
    """Load each patient with a nodule mask as a :class:`Case`; patients without one are left
    out (nothing to learn from or score against).

    The lung mask is the dataset's own where it has one (``dataset.lung_mask``), else
    :func:`lunglib.preprocess.segment_lungs`. ``keep_scans`` keeps the loaded scan too (more
    memory; for viewers and export). A scan that cannot be read is left out too, with the
    reason in ``skipped`` (``{patient_id: reason}``; :meth:`lunglib.datasets.CTDataset.scans`).
    """
    from lunglib.datasets.base import CTDataset

    cases = {}
    # CTDataset.scans over any object with load_scan (duck-typed datasets work too)
    for pid, scan in CTDataset.scans(dataset, ids, skipped=skipped):
        nodules = dataset.nodule_mask(pid, scan)
        if nodules is None:
            continue
        lung = dataset.lung_mask(pid, scan) if hasattr(dataset, "lung_mask") else None
        if lung is None:
            lung = segment_lungs(scan.hu, scan.spacing, scan.direction)
        cases[pid] = Case(image=window(scan.hu), nodules=nodules, lung=lung,
                          spacing=scan.spacing, step=context_step_for(scan.spacing[0], context_mm),
                          scan=scan if keep_scans else None)
    return cases


def _model_inputs(x: np.ndarray, y: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches as Keras inputs: a channel axis where there is no context, float32 masks."""
    return (x if context else x[..., None]), y[..., None].astype(np.float32)


def training_patches(
    cases: Mapping[str, Case],
    ids: Sequence[str],
    config: WholeScanConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Patches of the patients ``ids`` (:func:`lunglib.training.sampling.sample_patches`), as
    ``(n, patch, patch, 2 * context + 1)`` inputs and ``(n, patch, patch, 1)`` float32 masks,
    patient after patient; ``rng`` draws them (the same generator gives the same patches)."""
    xs, ys = [], []
    for pid in ids:
        c = cases[pid]
        x, y = sample_patches(c.image, c.nodules, c.lung, (config.patch, config.patch),
                              config.n_pos, config.n_neg, rng=rng, context=config.context,
                              hard_fraction=config.hard_fraction, context_step=c.step)
        xs.append(x)
        ys.append(y)
    return _model_inputs(np.concatenate(xs), np.concatenate(ys), config.context)


def build_segmenter(config: WholeScanConfig, seed: int, strategy=None):
    """A compiled 2.5D U-Net for ``config``'s patches, its weights drawn from ``seed`` (Keras's
    global seed is set first, so the same seed gives the same model and training draws).

    Built under ``strategy``'s scope when one is given (:mod:`lunglib.training.distribute`), so
    that :func:`fit_segmenter` can train it on every replica.
    """
    import keras
    import tensorflow as tf

    from lunglib.models import build_unet

    keras.utils.set_random_seed(seed)
    with (strategy or tf.distribute.get_strategy()).scope():
        return build_unet((config.patch, config.patch, 2 * config.context + 1),
                          depth=config.depth, filters=config.filters, dropout=config.dropout,
                          batch_norm=config.batch_norm, learning_rate=config.learning_rate)


def fit_segmenter(
    model,
    x: np.ndarray,
    y: np.ndarray,
    config: WholeScanConfig,
    epochs: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    augment_seed: int | None = None,
    strategy=None,
) -> pd.DataFrame:
    """Train ``model`` for ``epochs`` on patches ``(x, y)``; its per-epoch history.

    Under a ``strategy`` (the model built in its scope, :func:`build_segmenter`)
    ``config.batch_size`` is per replica: each step takes ``batch_size`` x replicas patches
    (:func:`lunglib.training.global_batch_size`).

    With ``config.restore_best`` (and ``validation``) the model ends with the weights of the
    epoch of lowest validation loss, not the last epoch's.

    With ``config.augment`` the batches come from :class:`lunglib.training.EpochAugmented` with
    :func:`lunglib.augment.dihedral_patches` (a fresh orientation of every patch each epoch,
    drawn from ``augment_seed``); otherwise Keras shuffles the arrays. ``validation`` patches
    are only evaluated, never augmented.
    """
    from lunglib.training.distribute import check_built_under, global_batch_size

    check_built_under(model, strategy)
    batch_size = global_batch_size(config.batch_size, strategy)
    if config.augment:
        from lunglib.augment import dihedral_patches
        from lunglib.training import EpochAugmented

        data = {"x": EpochAugmented(x, y, dihedral_patches, batch_size=batch_size,
                                    seed=augment_seed)}
    else:
        data = {"x": x, "y": y, "batch_size": batch_size}
    callbacks = []
    if config.restore_best and validation is not None:
        import keras

        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=epochs, restore_best_weights=True))
    history = model.fit(**data, validation_data=validation, epochs=epochs, verbose=0,
                        callbacks=callbacks)
    return pd.DataFrame(history.history)


class _EagerPredictor:
    """``predict`` by calling the model batch by batch, without Keras's compiled predict step.

    Every scan gets its own resized U-Net (its lungs' box), used for one volume only: tracing
    and compiling a predict function for it costs more CPU time than it saves over a few
    batches. The probabilities are the same.
    """

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, x: np.ndarray, batch_size: int = 16, verbose: int = 0) -> np.ndarray:
        return np.concatenate([np.asarray(self.model(x[i:i + batch_size], training=False))
                               for i in range(0, len(x), batch_size)])


def segment_scan(model, case: Case, config: WholeScanConfig, flip: bool = False) -> np.ndarray:
    """One model's probability map of one scan: the patch-trained U-Net resized to the lungs'
    in-plane box (:func:`lunglib.models.resize_unet`) and run slice by slice
    (:func:`lunglib.inference.predict_volume`, called eagerly: :class:`_EagerPredictor`);
    ``flip`` averages it with its mirror."""
    from lunglib.models import resize_unet

    whole = slice_window(case.lung, multiple=2 ** config.depth)
    return predict_volume(_EagerPredictor(resize_unet(model, whole)), case.image, case.lung,
                          whole, context=config.context, context_step=case.step, flip=flip)


def _add_maps(total: dict[str, np.ndarray], maps: Mapping[str, np.ndarray]) -> None:
    """Add probability maps into a running sum, patient by patient (the first are taken as is)."""
    for pid, prob in maps.items():
        total[pid] = prob if pid not in total else total[pid] + prob


def segment_scans(
    models: Sequence[Any],
    cases: Mapping[str, Case],
    ids: Sequence[str],
    config: WholeScanConfig,
    tta: bool = False,
) -> dict[str, np.ndarray]:
    """Probability maps of the patients ``ids``: with several models, the mean of their maps.

    Patient by patient, each model's map is added to a running sum (one map per patient held,
    whatever the number of models) and divided by the number of models. ``tta`` averages each
    model's map with its left-right mirror first.
    """
    if not models:
        raise ValueError("give at least one model")
    out: dict[str, np.ndarray] = {}
    for pid in ids:
        total: dict[str, np.ndarray] = {}
        for model in models:
            _add_maps(total, {pid: segment_scan(model, cases[pid], config, flip=tta)})
        out[pid] = total[pid] / len(models)
    return out


def mine_false_positives(
    model,
    cases: Mapping[str, Case],
    train_ids: Sequence[str],
    config: WholeScanConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Hard negatives of the training patients: ``config.n_hard`` patches per patient where
    ``model`` fires off the nodules (:func:`lunglib.training.sampling.false_positive_patches`).

    Returns the patches and masks as :func:`training_patches` does, and the number of patients
    where the model fired anywhere off the nodules.
    """
    xs, ys, fired = [], [], 0
    for pid in train_ids:
        c = cases[pid]
        x, y = false_positive_patches(segment_scan(model, c, config), c.image, c.nodules,
                                      (config.patch, config.patch), config.n_hard, rng=rng,
                                      context=config.context, context_step=c.step)
        x, y = _model_inputs(x, y, config.context)
        xs.append(x)
        ys.append(y)
        fired += len(x) > 0
    return np.concatenate(xs), np.concatenate(ys), fired


def train_whole_scan_segmenter(
    cases: Mapping[str, Case],
    train_ids: Sequence[str],
    config: WholeScanConfig | None = None,
    *,
    seed: int = 42,
    rng: np.random.Generator | None = None,
    patches: tuple[np.ndarray, np.ndarray] | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    strategy=None,
) -> TrainedSegmenter:
    """Train the 2.5D U-Net on the training patients: round 1, then the hard-negative round.

    Parameters
    ----------
    cases : mapping of str to Case
        At least the training patients (:func:`load_cases`).
    train_ids : sequence of str
        The training patients: the only ones patches and hard negatives come from.
    config : WholeScanConfig, optional
        Default ``WholeScanConfig()``.
    seed : int
        Seeds the model's weights and Keras's training draws (:func:`build_segmenter`) and the
        augmentation.
    rng : Generator, optional
        Draws the patches (when not given) and the mined hard negatives; default
        ``numpy.random.default_rng(seed)``.
    patches : (x, y), optional
        Training patches already drawn (:func:`training_patches`), e.g. shared by the members
        of an ensemble.
    validation : (x, y), optional
        Validation patches, evaluated after every epoch for the training curves.
    strategy : tf.distribute.Strategy, optional
        Build and train both rounds under it (:mod:`lunglib.training.distribute`);
        ``config.batch_size`` is then per replica. None: one device.

    Returns
    -------
    TrainedSegmenter
    """
    config = WholeScanConfig() if config is None else config
    rng = np.random.default_rng(seed) if rng is None else rng
    x, y = training_patches(cases, train_ids, config, rng) if patches is None else patches
    model = build_segmenter(config, seed, strategy)
    start = time.perf_counter()
    history = fit_segmenter(model, x, y, config, config.epochs, validation, augment_seed=seed,
                            strategy=strategy)
    seconds = {"round 1": time.perf_counter() - start}
    if not config.hard_round:
        return TrainedSegmenter(model, None, history, seconds=seconds)

    from lunglib.models import resize_unet

    start = time.perf_counter()
    round1 = resize_unet(model, (config.patch, config.patch))  # keeps round 1's weights
    x_hard, y_hard, fired = mine_false_positives(model, cases, train_ids, config, rng)
    # Fine-tune the same model (its optimizer state goes on), with a fresh augmentation stream.
    hard_seed = int(np.random.SeedSequence([seed, 2]).generate_state(1)[0])
    hard_history = fit_segmenter(model, np.concatenate([x, x_hard]), np.concatenate([y, y_hard]),
                                 config, config.hard_epochs, validation, augment_seed=hard_seed,
                                 strategy=strategy)
    seconds["round 2"] = time.perf_counter() - start
    return TrainedSegmenter(round1, model, history, hard_history, len(x_hard), fired, seconds)


def variant_maps(
    trained: TrainedSegmenter,
    cases: Mapping[str, Case],
    ids: Sequence[str],
    config: WholeScanConfig,
    tta: bool = False,
    seconds: dict[str, list[float]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Probability maps of the patients ``ids`` for every variant of one trained segmenter:
    ``"round 1"``, ``"round 1 + flip"`` (with ``tta``), ``"round 2"``, ``"round 2 + flip"``.

    ``seconds``, when given, collects the inference time per scan under ``"plain"`` and
    ``"flip"``.
    """
    out = {}
    for name, model in trained.rounds().items():
        for flip in (False, True) if tta else (False,):
            start = time.perf_counter()
            out[name + (" + flip" if flip else "")] = segment_scans([model], cases, ids, config,
                                                                    tta=flip)
            if seconds is not None and ids:
                seconds.setdefault("flip" if flip else "plain", []).append(
                    (time.perf_counter() - start) / len(ids))
    return out


def choose_on_validation(
    maps: Mapping[str, Mapping[str, np.ndarray]],
    cases: Mapping[str, Case],
    val_ids: Sequence[str],
    **grid: Sequence[float],
) -> VariantChoice:
    """Each variant's post-processing and the best variant, from the validation patients' maps
    only (:func:`lunglib.evaluation.selection.choose_variant`; ``grid``: its ``thresholds``,
    ``min_volumes_mm3``, ``min_peaks``)."""
    return choose_variant({name: [probs[p] for p in val_ids] for name, probs in maps.items()},
                          [cases[p].nodules for p in val_ids], [cases[p].spacing for p in val_ids],
                          **grid)


def evaluate_variants(
    maps: Mapping[str, Mapping[str, np.ndarray]],
    cases: Mapping[str, Case],
    parts: Mapping[str, Sequence[str]],
    **grid: Sequence[float],
) -> tuple[pd.DataFrame, VariantChoice]:
    """Choose on ``parts["val"]`` (:func:`choose_on_validation`), then score every variant once
    on ``parts["test"]`` (:func:`lunglib.recipes.whole_scan_scoring.score_variants`)."""
    choice = choose_on_validation(maps, cases, parts["val"], **grid)
    return score_variants(maps, choice, cases, parts["test"]), choice


@dataclass
class WholeScanResult:
    """What :func:`run_whole_scan_recipe` found.

    Attributes
    ----------
    parts : dict
        ``train``, ``val`` and ``test`` patients (those with a nodule mask).
    variants : DataFrame
        Every variant of the (ensemble's) maps: post-processing and Dice on validation, Dice on
        test (:func:`evaluate_variants`).
    choice : VariantChoice
        The validation choice: ``choice.chosen`` is the variant reported in ``scores``.
    scores : WholeScanScores
        The chosen variant on the test patients; ``scores.levels`` is the table of test Dice.
    members : DataFrame or None
        With several members, each model alone (its own choices on validation), ``model_seed``
        added: the spread between seeds. Not candidates for the choice.
    training : DataFrame
        Per member: ``model_seed``, minutes of round 1 and round 2, mined patches and patients.
    seconds_per_scan : dict
        Mean whole-scan inference time, ``plain`` and ``flip``.
    maps : dict or None
        With ``keep_maps``: every variant's map of each validation and test patient.
    """

    parts: dict[str, list[str]]
    variants: pd.DataFrame
    choice: VariantChoice
    scores: WholeScanScores
    members: pd.DataFrame | None
    training: pd.DataFrame
    seconds_per_scan: dict[str, float]
    maps: dict[str, dict[str, np.ndarray]] | None = None

    @property
    def levels(self) -> pd.DataFrame:
        """The test scores table: Dice and IoU per patient, global and per nodule."""
        return self.scores.levels


def run_whole_scan_recipe(
    dataset,
    split: Split,
    config: WholeScanConfig | None = None,
    *,
    members: int = 1,
    tta: bool = False,
    seed: int = 42,
    thresholds: Sequence[float] = THRESHOLDS,
    min_volumes_mm3: Sequence[float] = MIN_VOLUMES_MM3,
    min_peaks: Sequence[float] = (0.0,),
    keep_maps: bool = False,
    strategy=None,
) -> WholeScanResult:
    """The whole recipe: train, segment the validation and test scans, choose, score the test.

    Parameters
    ----------
    dataset : CTDataset
        With ``load_scan``, ``nodule_mask`` and (optionally) ``lung_mask``.
    split : Split
        Train, validation and test patients (:func:`cohort_split`).
    config : WholeScanConfig, optional
        Default ``WholeScanConfig()``.
    members : int, default 1
        Models trained (seeds ``seed``, ``seed + 1``, ...) on the same patches, each with the
        whole recipe (its round 2 mined from its own false positives); the mean of their
        probability maps is scored.
    tta : bool, default False
        Also try every round averaged with its left-right mirror (a variant of its own).
    seed : int, default 42
        Seeds the patches, the mining and the first member.
    thresholds, min_volumes_mm3, min_peaks : sequence of float
        The post-processing grid searched on validation for every variant.
    keep_maps : bool, default False
        Keep every variant's probability maps in the result (e.g. to save them).
    strategy : tf.distribute.Strategy, optional
        Train every member under it (:func:`train_whole_scan_segmenter`); inference runs as
        before.

    Returns
    -------
    WholeScanResult
    """
    if members < 1:
        raise ValueError(f"members must be 1 or more (the number of models to average); got "
                         f"{members}")
    config = WholeScanConfig() if config is None else config
    cases = load_cases(dataset, [*split.train, *split.val, *split.test], config.context_mm)
    parts = {name: [p for p in getattr(split, name) if p in cases]
             for name in ("train", "val", "test")}
    grid = {"thresholds": thresholds, "min_volumes_mm3": min_volumes_mm3, "min_peaks": min_peaks}
    rng = np.random.default_rng(seed)
    patches = training_patches(cases, parts["train"], config, rng)
    validation = training_patches(cases, parts["val"], config, rng)
    evaluated = parts["val"] + parts["test"]
    totals: dict[str, dict[str, np.ndarray]] = {}
    alone, training, seconds = [], [], {}
    for k in range(members):  # only the running sum of the members' maps is kept
        trained = train_whole_scan_segmenter(cases, parts["train"], config, seed=seed + k,
                                             rng=rng, patches=patches, validation=validation,
                                             strategy=strategy)
        training.append({"model_seed": seed + k,
                         **{f"{name.replace(' ', '')}_min": s / 60
                            for name, s in trained.seconds.items()},
                         "hard_patches": trained.hard_patches,
                         "hard_patients": trained.hard_patients})
        maps = variant_maps(trained, cases, evaluated, config, tta, seconds)
        if members > 1:
            alone.append(evaluate_variants(maps, cases, parts, **grid)[0].assign(
                model_seed=seed + k))
        for name, probs in maps.items():
            _add_maps(totals.setdefault(name, {}), probs)
    maps = {name: {p: total / members for p, total in probs.items()}
            for name, probs in totals.items()}
    variants, choice = evaluate_variants(maps, cases, parts, **grid)
    scores = score_test(maps[choice.chosen], cases, parts["test"], choice.postprocessing())
    return WholeScanResult(
        parts=parts, variants=variants, choice=choice, scores=scores,
        members=pd.concat(alone, ignore_index=True) if alone else None,
        training=pd.DataFrame(training),
        seconds_per_scan={k: float(np.mean(v)) for k, v in seconds.items()},
        maps=maps if keep_maps else None)
