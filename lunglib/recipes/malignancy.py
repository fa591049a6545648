"""Benign vs malignant LIDC-IDRI nodule patches: the size floor, hand-made features and 2D CNNs.

The recipe behind ``benchmarks/bench_lidc_malignancy.py``, as library functions:

1. :func:`malignancy_data` reads a :class:`lunglib.datasets.PatchSet` (LIDC nodule patch format)
   into the arrays the recipe needs: the outlining reader's label (rating <= 2 benign, >= 4
   malignant, 3 unlabelled), the mean rating of every reader of the same nodule and the readers'
   characteristic ratings (training targets only).
2. :func:`prepare_malignancy_inputs` makes the CNN input: 0.8 mm pixels, 40x40, three HU windows,
   the outline and a size-normalised view of the nodule.
3. :func:`build_malignancy_cnn` and :func:`train_malignancy_classifier` train a seed ensemble with
   dihedral augmentation and early stopping on validation, and choose the decision threshold on
   the validation patients; :func:`predict_malignancy` averages the ensemble over the eight
   dihedral views (test-time augmentation).
4. :func:`cross_validate_malignancy` runs every method over patient-grouped folds and returns one
   row per predicted outline; :mod:`lunglib.recipes.malignancy_report` scores that table.

Methods (names used by :func:`cross_validate_malignancy`):

``area-logreg``
    Logistic regression on the outline's area in mm^2 (the size floor).
``features-logreg``
    Logistic regression (C=0.1) on :func:`lunglib.models.outline_features`.
``naive-cnn``
    :func:`lunglib.models.build_cnn` defaults on the raw patch (HU / 1000), no augmentation.
``best-cnn``
    :data:`MALIGNANCY_CNN_CONFIG` on :func:`prepare_malignancy_inputs`, trained on every training
    patch (rating 3 included) against the soft target ``(rating - 1) / 4``.
``consensus-cnn``
    best-cnn trained against ``(reader mean - 1) / 4``, the mean malignancy of every reader who
    marked the nodule (a nodule never spans two patients, so no test rating reaches training).
``multitask-cnn``
    consensus-cnn with a second sigmoid head regressing the readers' eight characteristic
    ratings (nodule mean, scaled to [0, 1]).
``X+area``, ``X+features``
    Logistic regression on [X's logit, log outline area] or [X's logit, features-logreg's
    logit], fitted on the validation patients; X must come earlier in the method list.

Every method is validated (early stopping, stacking, threshold) against the outlining reader's
own label on the validation patients, and the test fold is predicted once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from lunglib.datasets import PatchSet
from lunglib.evaluation import aggregate_by_group, choose_threshold, patient_kfold, patient_split

TARGET_SPACING_MM = 0.8
CROP = 40
HU_WINDOW = (-1000.0, 1000.0)  # wide enough to keep calcification
EXTRA_WINDOWS = ((-1000.0, -400.0), (-160.0, 240.0))  # lung and mediastinal windows
NODULE_VIEW = 0.6  # the outline spans ~60 % of the size-normalised channel

MALIGNANCY_CNN_CONFIG: dict[str, Any] = {
    "n_conv_layers": 3,
    "filters": 16,
    "kernel_size": 3,
    "pool_size": 2,
    "dense_units": 64,
    "dropout": 0.4,
    "l2": 1e-4,
    "learning_rate": 1e-3,
    "batch_norm": True,
}
"""Keyword arguments of :func:`lunglib.models.build_cnn` for best-, consensus- and multitask-cnn."""

CHARACTERISTICS: dict[str, tuple[int, int]] = {
    "subtlety": (1, 5), "internal_structure": (1, 4), "calcification": (1, 6),
    "sphericity": (1, 5), "margin": (1, 5), "lobulation": (1, 5), "spiculation": (1, 5),
    "texture": (1, 5),
}
"""LIDC characteristic rating -> its range; scaled to [0, 1] as multitask-cnn's aux targets."""

CNN_METHODS = ("naive-cnn", "best-cnn", "consensus-cnn", "multitask-cnn")
BASE_METHODS = ("area-logreg", "features-logreg", *CNN_METHODS)
DEFAULT_METHODS = ("area-logreg", "features-logreg", "naive-cnn", "best-cnn", "best-cnn+area",
                   "best-cnn+features")
TABLE_COLUMNS = ("method", "fold", "split", "row", "patient", "nodule", "y", "reader_mean", "p",
                 "seconds")


@dataclass
class MalignancyData:
    """One LIDC nodule patch set as the malignancy recipe uses it (one row per reader outline).

    Attributes
    ----------
    images, masks : ndarray (N, H, W) float32
        HU patches and the outlining reader's outline (1 inside).
    spacing_mm : ndarray (N,) float32
        In-plane pixel spacing.
    patient_ids, nodule_ids : ndarray (N,) str
        Patient and physical nodule of every outline.
    rating : ndarray (N,) int64
        The outlining reader's malignancy rating, 1-5.
    labels : ndarray (N,) int64
        1 for rating >= 4, 0 for <= 2, -1 for 3 (no binary label; never scored).
    reader_mean : ndarray (N,) float32
        Mean malignancy of every reader who marked the nodule (a training target only).
    characteristics : ndarray (N, 8) float32
        The readers' :data:`CHARACTERISTICS` ratings, nodule mean, in [0, 1] (training only).
    """

    images: np.ndarray
    masks: np.ndarray
    spacing_mm: np.ndarray
    patient_ids: np.ndarray
    nodule_ids: np.ndarray
    rating: np.ndarray
    labels: np.ndarray
    reader_mean: np.ndarray
    characteristics: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def area_mm2(self) -> np.ndarray:
        """Outline area of every patch in mm^2 (float32)."""
        return self.masks.sum(axis=(1, 2)) * self.spacing_mm**2

    def rated(self, index: np.ndarray) -> np.ndarray:
        """The rows of ``index`` with a benign/malignant label (rating 3 dropped), in order."""
        return index[self.labels[index] >= 0]


def malignancy_data(patches: PatchSet) -> MalignancyData:
    """The arrays of the malignancy recipe from an LIDC-format patch set.

    Parameters
    ----------
    patches : PatchSet
        From :func:`lunglib.datasets.load_patch_set` on an LIDC nodule patch file: 2D HU patches
        with outlines, ratings, patient and nodule ids, ``pixel_spacing_mm``,
        ``malignancy_by_reader`` and the eight characteristic ratings.

    Returns
    -------
    MalignancyData
        Rows of one nodule hold disjoint readers, so their nonzero ``malignancy_by_reader``
        entries are pooled into the nodule's reader mean.
    """
    needed = ["pixel_spacing_mm", "malignancy_by_reader", *CHARACTERISTICS]
    missing = [k for k in needed if k not in patches.extra]
    if patches.masks is None or patches.nodule_ids is None or missing or patches.units != "HU":
        raise ValueError(
            f"{patches.source}: the malignancy recipe needs an LIDC nodule patch file with HU "
            f"images, masks, nodule_id and {', '.join(needed)}; missing "
            f"{', '.join(missing) or 'masks, nodule ids or HU units'}"
        )
    nodule = patches.nodule_ids.astype(str)
    total, count = _nodule_ratings(patches)
    scaled = [(patches.extra[name].astype(np.float32) - lo) / (hi - lo)
              for name, (lo, hi) in CHARACTERISTICS.items()]
    rating = patches.malignancy.astype(np.int64)
    return MalignancyData(
        images=patches.images.astype(np.float32),  # already HU (see the data README)
        masks=patches.masks.astype(np.float32),
        spacing_mm=np.asarray(patches.extra["pixel_spacing_mm"]).astype(np.float32),
        patient_ids=patches.patient_ids.astype(str),
        nodule_ids=nodule,
        rating=rating,
        labels=np.where(rating == 3, -1, (rating >= 4).astype(np.int64)),
        reader_mean=(total / count).astype(np.float32),
        characteristics=np.stack([aggregate_by_group(v, nodule) for v in scaled],
                                 axis=1).astype(np.float32),
    )


def _nodule_ratings(patches: PatchSet) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sum and the count of every reader's malignancy rating of its nodule.

    The rows of one ``nodule_id`` hold disjoint readers, so their nonzero
    ``malignancy_by_reader`` entries are pooled (exact integers).
    """
    by_reader = np.asarray(patches.extra["malignancy_by_reader"]).astype(np.int64)
    nodule = patches.nodule_ids.astype(str)
    total = pd.Series(by_reader.sum(axis=1)).groupby(nodule).transform("sum").to_numpy()
    count = pd.Series((by_reader > 0).sum(axis=1)).groupby(nodule).transform("sum").to_numpy()
    return total, count


def reader_agreement(patches: PatchSet) -> tuple[float, int]:
    """How well the other readers of a nodule predict the outlining reader's label.

    ROC-AUC of the mean rating of the OTHER readers of each outline's nodule against the
    outlining reader's benign/malignant label, over outlines whose nodule has another reader: a
    rough ceiling for any model scored against a single reader.

    Returns
    -------
    (float, int)
        The ROC-AUC and the number of outlines it is computed on.
    """
    own = patches.malignancy.astype(np.int64)
    total, count = _nodule_ratings(patches)
    ok = (own != 3) & (count > 1)
    others = (total[ok] - own[ok]) / (count[ok] - 1)
    return float(roc_auc_score(own[ok] >= 4, others)), int(ok.sum())


def prepare_malignancy_inputs(
    data: MalignancyData,
    target_spacing_mm: float = TARGET_SPACING_MM,
    size: int = CROP,
    window: tuple[float, float] = HU_WINDOW,
    extra_windows: Sequence[tuple[float, float]] = EXTRA_WINDOWS,
    nodule_view: float | None = NODULE_VIEW,
) -> np.ndarray:
    """The CNN input of best-, consensus- and multitask-cnn, ``(N, size, size, 5)`` in [0, 1].

    Channels (see :func:`lunglib.training.patch_inputs`): the patch resampled to
    ``target_spacing_mm`` pixels and centre-cropped to ``size`` in ``window`` and in each of
    ``extra_windows`` (lung and mediastinal by default), the outline, and a size-normalised
    view in which the outline spans ``nodule_view`` of the side.
    """
    from lunglib.training import patch_inputs

    return patch_inputs(data.images, data.masks, data.spacing_mm, target_spacing_mm, size,
                        window, extra_windows=extra_windows, nodule_view=nodule_view)


def naive_inputs(data: MalignancyData) -> np.ndarray:
    """naive-cnn's input: the raw HU patch divided by 1000, ``(N, H, W, 1)`` float32."""
    return (data.images / 1000.0)[..., None]


def build_malignancy_cnn(
    input_shape: Sequence[int],
    n_aux: int = 0,
    aux_weight: float = 0.5,
    config: Mapping[str, Any] | None = None,
):
    """The recipe's compiled 2D CNN, optionally with an auxiliary regression head.

    Parameters
    ----------
    input_shape : (height, width, channels)
    n_aux : int
        0: :func:`lunglib.models.build_cnn` with ``config``. Otherwise a second sigmoid head of
        ``n_aux`` units (named ``aux``) on the dense layer, trained with binary cross-entropy
        at loss weight ``aux_weight``; the malignancy head keeps the name ``output``.
    aux_weight : float
        Loss weight of the auxiliary head.
    config : mapping, optional
        ``build_cnn`` keyword arguments; :data:`MALIGNANCY_CNN_CONFIG` by default, ``{}`` for
        ``build_cnn``'s own defaults (naive-cnn).

    Returns
    -------
    keras.Model
    """
    from lunglib.models import build_cnn

    config = dict(MALIGNANCY_CNN_CONFIG if config is None else config)
    base = build_cnn(input_shape, **config)
    if not n_aux:
        return base
    import keras

    aux = keras.layers.Dense(n_aux, activation="sigmoid", dtype="float32", name="aux")(
        base.get_layer("dropout_dense").output)
    model = keras.Model(base.input, {"output": base.output, "aux": aux}, name="multitask_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(config.get("learning_rate", 1e-3)),
        loss={"output": "binary_crossentropy", "aux": "binary_crossentropy"},
        loss_weights={"output": 1.0, "aux": aux_weight},
    )
    return model


@dataclass
class MalignancyClassifier:
    """A trained seed ensemble with its validation-chosen decision threshold.

    Attributes
    ----------
    models : list of keras.Model
        One malignancy model (sigmoid output) per seed.
    threshold : float
        Chosen on the rated validation outlines only (``threshold_rule`` of the training call).
    val_pred : ndarray
        The ensemble's predictions on every validation row it was given.
    tta : bool
        Whether :meth:`predict` averages the eight dihedral views.
    """

    models: list
    threshold: float
    val_pred: np.ndarray
    tta: bool = True

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probability of malignancy of every input (see :func:`predict_malignancy`)."""
        return predict_malignancy(self.models, x, tta=self.tta)


def predict_malignancy(models: Sequence, x: np.ndarray, tta: bool = True) -> np.ndarray:
    """Mean sigmoid output of ``models`` on ``x``, each over the 8 dihedral views when ``tta``.

    Test-time augmentation is :func:`lunglib.augment.predict_tta` (every rotation by 90 degrees
    and its mirror image, exact, no resampling).
    """
    from lunglib.augment import predict_tta
    from lunglib.training import predict_proba

    preds = []
    for model in models:
        predict = partial(predict_proba, model)
        preds.append(predict_tta(predict, x) if tta else predict(x))
    return np.mean(preds, axis=0)


def _malignancy_head(model):
    """The single-output malignancy model inside a multitask model (shared weights)."""
    import keras

    return keras.Model(model.input, model.get_layer("output").output)


def train_malignancy_classifier(
    x: np.ndarray,
    target: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    seeds: Iterable[int] = (42,),
    epochs: int = 40,
    patience: int = 8,
    config: Mapping[str, Any] | None = None,
    aux: np.ndarray | None = None,
    aux_weight: float = 0.5,
    batch_size: int = 32,
    class_weight: str | None = None,
    augment: bool = True,
    tta: bool = True,
    threshold_rule: str = "accuracy",
    strategy=None,
) -> MalignancyClassifier:
    """Train one model per seed, stop early on validation, choose the threshold on validation.

    Parameters
    ----------
    x : ndarray (N, H, W, C)
        Inputs of every sample, e.g. :func:`prepare_malignancy_inputs`.
    target : ndarray (N,)
        Training target in [0, 1]: the soft rating ``(rating - 1) / 4``, the readers' mean
        ``(reader_mean - 1) / 4`` or a binary label.
    labels : ndarray (N,)
        Binary label (1 malignant, 0 benign, -1 none) for validation: early stopping and the
        threshold use the rated rows of ``val_idx`` against this label, never ``target``.
    train_idx, val_idx : ndarray of int
        Rows to train on and to validate on (patient-disjoint); rows of ``val_idx`` without a
        label are predicted (``val_pred``) but not scored.
    seeds : iterable of int
        One ensemble member per seed (:func:`lunglib.training.set_seed` before each).
    epochs, patience : int
        Early stopping on the validation loss (of the malignancy head), best weights restored.
    config : mapping, optional
        Network, see :func:`build_malignancy_cnn`.
    aux : ndarray (N, k), optional
        Auxiliary training targets in [0, 1] (multitask); None trains the malignancy head only.
    aux_weight : float
        Loss weight of ``aux``.
    batch_size : int
    class_weight : {"balanced", None}
        Passed to :func:`lunglib.training.train_model`.
    augment : bool
        A random dihedral view of every training example (:func:`lunglib.augment.dihedral_augment`).
    tta : bool
        Predict with test-time augmentation over the 8 dihedral views.
    threshold_rule : str
        :func:`lunglib.evaluation.choose_threshold` rule; ``"accuracy"`` maximises validation
        accuracy.
    strategy : tf.distribute.Strategy, optional
        Build and train every member under it (:mod:`lunglib.training.distribute`);
        ``batch_size`` is then per replica. None: one device.

    Returns
    -------
    MalignancyClassifier
    """
    import tensorflow as tf

    from lunglib.augment import dihedral_augment
    from lunglib.training import global_batch_size, set_seed, train_model

    val_fit = val_idx[labels[val_idx] >= 0]
    models = []
    for seed in seeds:
        set_seed(seed)
        with (strategy or tf.distribute.get_strategy()).scope():
            model = build_malignancy_cnn(x.shape[1:], 0 if aux is None else aux.shape[1],
                                         aux_weight, config)
        if aux is None:
            train_model(model, (x[train_idx], target[train_idx]), (x[val_fit], labels[val_fit]),
                        epochs=epochs, patience=patience, batch_size=batch_size,
                        class_weight=class_weight, monitor="val_loss",
                        augment=dihedral_augment if augment else None, seed=seed,
                        strategy=strategy)
            models.append(model)
            continue
        global_batch = global_batch_size(batch_size, strategy)
        train = tf.data.Dataset.from_tensor_slices(
            (x[train_idx], {"output": target[train_idx], "aux": aux[train_idx]})
        ).shuffle(len(train_idx), seed=seed)
        if augment:
            train = train.map(dihedral_augment)
        train = train.batch(global_batch).prefetch(tf.data.AUTOTUNE)
        val = tf.data.Dataset.from_tensor_slices(
            (x[val_fit], {"output": labels[val_fit].astype(np.float32), "aux": aux[val_fit]})
        ).batch(global_batch)
        train_model(model, train, val, epochs=epochs, patience=patience,
                    class_weight=class_weight, monitor="val_output_loss", seed=seed,
                    strategy=strategy)
        models.append(_malignancy_head(model))
    val_pred = predict_malignancy(models, x[val_idx], tta=tta)
    rated = labels[val_idx] >= 0
    threshold = choose_threshold(labels[val_idx][rated], val_pred[rated], rule=threshold_rule)
    return MalignancyClassifier(models, threshold, val_pred, tta)


def fit_logistic(features: np.ndarray, labels: np.ndarray, C: float = 1.0,
                 max_iter: int = 100) -> Pipeline:
    """Standardised features -> logistic regression, fitted on the rows with a label (>= 0)."""
    fit = labels >= 0
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    return clf.fit(features[fit], labels[fit])


def _logit(p: np.ndarray, eps: float = 1e-6, clip: bool = True) -> np.ndarray:
    """Log-odds of ``p``: of ``p`` clipped to [eps, 1 - eps], or smoothed by ``eps`` (no clip)."""
    if clip:
        p = np.clip(p, eps, 1 - eps)
        return np.log(p / (1 - p))
    return np.log((p + eps) / (1 - p + eps))


def stack_on_validation(val_columns: np.ndarray, test_columns: np.ndarray,
                        val_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on a few per-sample inputs, fitted on the validation rows.

    Few inputs only: a validation split of about a hundred patients is too small to refit many.
    Returns the stacked probabilities of the validation and of the test rows.
    """
    clf = fit_logistic(val_columns, val_labels)
    return clf.predict_proba(val_columns)[:, 1], clf.predict_proba(test_columns)[:, 1]


def check_methods(methods: Sequence[str]) -> None:
    """Raise ``ValueError`` for an unknown method or a stack listed before what it stacks."""
    for i, m in enumerate(methods):
        base, _, extra = m.partition("+")
        if base not in BASE_METHODS or extra not in ("", "area", "features"):
            raise ValueError(f"unknown method {m!r}: use {', '.join(BASE_METHODS)} or "
                             "<method>+area / <method>+features")
        need = [base] * bool(extra) + ["features-logreg"] * (extra == "features")
        if not set(need) <= set(methods[:i]):
            raise ValueError(f"{m} stacks {' and '.join(need)}: list them before it")


def cross_validate_malignancy(
    data: MalignancyData,
    methods: Sequence[str] = DEFAULT_METHODS,
    folds: int = 5,
    seed: int = 42,
    n_seeds: int = 2,
    only_folds: Iterable[int] | None = None,
    epochs: int = 40,
    patience: int = 8,
    naive_epochs: int = 15,
    naive_patience: int = 5,
    aux_weight: float = 0.5,
    val_fraction: float = 0.2,
    log: Callable[[str], None] | None = None,
    on_fold: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Patient-grouped k-fold cross-validation of the malignancy methods, one row per outline.

    Folds: :func:`lunglib.evaluation.patient_kfold` over every patient, stratified by the
    3-way label (rating-3 outlines train best-, consensus- and multitask-cnn). Inside each
    training fold :func:`lunglib.evaluation.patient_split` cuts ``val_fraction`` of the patients
    off for early stopping, stacking and thresholds. Every outline of the validation and test
    patients is predicted, rating 3 included (a view of its nodule for the nodule levels).

    Parameters
    ----------
    data : MalignancyData
    methods : sequence of str
        See the module notes; a stack after what it stacks (:func:`check_methods`).
    folds, seed : int
        Fold count and the seed of the folds and validation splits.
    n_seeds : int
        Ensemble members of best-, consensus- and multitask-cnn per fold (seeds
        ``seed + 100 * fold + s``); naive-cnn trains one model with seed ``seed + fold``.
    only_folds : iterable of int, optional
        Run these folds only (the folds themselves are the same).
    epochs, patience, naive_epochs, naive_patience : int
        Early-stopping limits of the recipe's CNNs and of naive-cnn.
    aux_weight : float
        Loss weight of multitask-cnn's characteristic-rating head.
    val_fraction : float
        Fraction of each training fold's patients used for validation.
    log : callable, optional
        Called with a progress line (the test ROC-AUC) after each method of each fold.
    on_fold : callable, optional
        Called with the table so far after each fold (to save partial runs).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`: ``method``, ``fold``, ``split`` ("val" or "test"),
        ``row`` (index into ``data``), ``patient``, ``nodule``, ``y`` (the outlining reader's
        label, -1 unrated), ``reader_mean``, ``p`` (the prediction) and ``seconds`` (the
        method's time on that fold).
    """
    methods = list(methods)
    check_methods(methods)
    y, patients = data.labels, data.patient_ids
    inputs: dict[str, np.ndarray] = {}
    if "naive-cnn" in methods:
        inputs["naive-cnn"] = naive_inputs(data)
    if {"best-cnn", "consensus-cnn", "multitask-cnn"} & set(methods):
        inputs["best-cnn"] = prepare_malignancy_inputs(data)
    if "features-logreg" in methods:
        from lunglib.models import outline_features

        inputs["features"] = outline_features(data.images, data.masks, data.spacing_mm)
    targets = {
        "best-cnn": (data.rating - 1) / 4.0,
        "consensus-cnn": ((data.reader_mean - 1) / 4.0).astype(np.float32),
    }
    area = data.area_mm2()
    only = None if only_folds is None else set(only_folds)
    parts: list[pd.DataFrame] = []
    for fold, (outer_tr, outer_te) in enumerate(patient_kfold(patients, y, k=folds, seed=seed)):
        if only is not None and fold not in only:
            continue
        inner = patient_split(patients[outer_tr], y[outer_tr], val_fraction=val_fraction,
                              test_fraction=0.0, seed=seed)
        masks = inner.masks(patients[outer_tr])
        tr_all, va, te = outer_tr[masks["train"]], outer_tr[masks["val"]], outer_te
        for a, b in ((tr_all, te), (va, te), (tr_all, va)):
            if set(patients[a]) & set(patients[b]):
                raise AssertionError("a patient crosses splits")
        tr = data.rated(tr_all)
        members = [seed + 100 * fold + s for s in range(n_seeds)]
        preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for m in methods:
            start = time.perf_counter()
            base, _, extra = m.partition("+")
            if m in ("area-logreg", "features-logreg"):
                feats = area[:, None] if m == "area-logreg" else inputs["features"]
                options = {} if m == "area-logreg" else {"C": 0.1, "max_iter": 5000}
                clf = fit_logistic(feats[tr], y[tr], **options)
                pv, pt = clf.predict_proba(feats[va])[:, 1], clf.predict_proba(feats[te])[:, 1]
            elif m == "naive-cnn":
                model = train_malignancy_classifier(
                    inputs[m], y, y, tr, va, seeds=[seed + fold], epochs=naive_epochs,
                    patience=naive_patience, config={}, batch_size=16, class_weight="balanced",
                    augment=False, tta=False)
                pv, pt = model.val_pred, model.predict(inputs[m][te])
            elif m in CNN_METHODS:
                target = targets["best-cnn"] if m == "best-cnn" else targets["consensus-cnn"]
                model = train_malignancy_classifier(
                    inputs["best-cnn"], target, y, tr_all, va, seeds=members, epochs=epochs,
                    patience=patience, aux_weight=aux_weight,
                    aux=data.characteristics if m == "multitask-cnn" else None)
                pv, pt = model.val_pred, model.predict(inputs["best-cnn"][te])
            elif extra == "area":
                (bv, bt), eps = preds[base], 1e-6
                pv, pt = stack_on_validation(
                    np.column_stack([_logit(bv, eps, clip=False), np.log1p(area[va])]),
                    np.column_stack([_logit(bt, eps, clip=False), np.log1p(area[te])]), y[va])
            else:  # X+features
                (bv, bt), (fv, ft) = preds[base], preds["features-logreg"]
                pv, pt = stack_on_validation(np.column_stack([_logit(bv), _logit(fv)]),
                                             np.column_stack([_logit(bt), _logit(ft)]), y[va])
            preds[m] = (pv, pt)
            seconds = time.perf_counter() - start
            for split, idx, p in (("val", va, pv), ("test", te, pt)):
                parts.append(pd.DataFrame({
                    "method": m, "fold": fold, "split": split, "row": idx,
                    "patient": patients[idx], "nodule": data.nodule_ids[idx], "y": y[idx],
                    "reader_mean": data.reader_mean[idx], "p": p, "seconds": seconds,
                }))
            if log is not None:
                scored = y[te] >= 0
                log(f"  fold {fold}: {m:12s} AUC {roc_auc_score(y[te][scored], pt[scored]):.3f}")
        if on_fold is not None:
            on_fold(pd.concat(parts, ignore_index=True))
    if not parts:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    return pd.concat(parts, ignore_index=True)
